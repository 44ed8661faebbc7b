"""The alerts page and its forms: firing and resolved alerts, the notification log, and
silences — made from label matchers (one ``label=value`` a line, prefilled from an alert) and
expired early. Forms carry the session's CSRF token and are refused without it."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response

from waquality.alerting import book
from waquality.config import parse_duration
from waquality.web import reads
from waquality.web.app import Dashboard, PageError
from waquality.web.auth import Session
from waquality.web.filters import View, parse_view

LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
LONGEST = timedelta(days=365)
MAX_VALUE = 256
MAX_COMMENT = 1000


def silence_page(
    board: Dashboard,
    request: Request,
    session: Session,
    view: View,
    problem: str | None,
    *,
    draft: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    now = board.clock()
    show_expired = request.query_params.get("expired") == "1"
    with board.db.read() as conn:
        numbers = reads.numbers(conn, view.waba)
        choices = reads.filter_choices(conn, view)
    firing = [
        a for a in book.alerts(board.db, "firing", 500) if reads.alert_in_view(a, view, numbers)
    ]
    resolved = [
        a for a in book.alerts(board.db, "resolved", 200) if reads.alert_in_view(a, view, numbers)
    ][:100]
    alerts = {a["fingerprint"]: a for a in firing + resolved}
    wanted = request.query_params.get("silence")
    if draft is None and wanted in alerts:
        labels = alerts[wanted]["labels"]
        draft = {
            "matchers": "\n".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "duration": "2h",
            "comment": "",
        }
    notes = book.notifications(board.db, 100)
    context = {
        "view": view,
        "firing": firing,
        "resolved": resolved,
        "silences": book.silences(board.db, now, include_expired=show_expired),
        "show_expired": show_expired,
        "notifications": notes,
        "alert_summaries": {a["fingerprint"]: a["summary"] for a in firing + resolved},
        "draft": draft or {"matchers": "", "duration": "2h", "comment": ""},
        "problem": problem,
        **choices,
    }
    return board.render(request, "alerts.html", context, session=session, status=status)


def parse_matchers(text: str) -> dict[str, str]:
    """``label=value`` lines (blank lines skipped); ``ValueError`` says what is wrong."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sign, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sign or not LABEL.match(name):
            raise ValueError(f"not a label=value line: {line.strip()[:60]!r}")
        if not value or len(value) > MAX_VALUE:
            raise ValueError(f"label {name}: give a value of 1 to {MAX_VALUE} characters")
        found[name] = value
    if not found:
        raise ValueError("give at least one label=value line")
    return found


def _checked(session: Session, form: dict[str, str]) -> None:
    if not session.csrf_ok(form.get("csrf")):
        raise PageError(403, "The form had expired; reload the page and try again.")


def _back(board: Dashboard, form: dict[str, str]) -> View:
    """The view the form was sent from (its filters), to go back to."""
    params = dict(parse_qsl(form.get("back", "").lstrip("?")[:1000]))
    return parse_view(params, board.clock(), board.zone)


def silence_form(
    board: Dashboard, request: Request, session: Session, form: dict[str, str]
) -> Response:
    _checked(session, form)
    view = _back(board, form)
    try:
        matchers = parse_matchers(form.get("matchers", ""))
        duration = parse_duration(form.get("duration", ""))
        if not timedelta(0) < duration <= LONGEST:
            raise ValueError("the duration must be above zero and at most 365d")
        comment = form.get("comment", "").strip()
        if len(comment) > MAX_COMMENT:
            raise ValueError(f"the comment is longer than {MAX_COMMENT} characters")
    except (ValueError, OverflowError) as exc:
        draft = {k: form.get(k, "") for k in ("matchers", "duration", "comment")}
        return silence_page(
            board, request, session, view, f"Not silenced: {exc}.", draft=draft, status=400
        )
    now = board.clock()
    book.add_silence(board.db, matchers, comment, now + duration, now)
    return board.redirect("/alerts" + view.query())


def expire(
    board: Dashboard, request: Request, session: Session, form: dict[str, str], silence_id: str
) -> Response:
    _checked(session, form)
    view = _back(board, form)
    if not silence_id.isdigit() or len(silence_id) > 18:
        raise PageError(404, "No such silence.")
    if not book.expire_silence(board.db, int(silence_id), board.clock()):
        raise PageError(404, "No such active silence.")
    return board.redirect("/alerts" + view.query())
