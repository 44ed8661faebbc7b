"""What the pages read: only what they show, through the indexes (history by subject, field and
time; events by subject and time; per-hour aggregates by number, template and hour)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, literal, or_, select, true, union

from waquality.domain.delivery import QUALITY_CODES, rate
from waquality.domain.enums import SubjectKind
from waquality.store import queries, schema
from waquality.store.stats import ALL
from waquality.web.filters import View
from waquality.web.flagged import Countdown, countdown

p, t, h, e = schema.phone_numbers, schema.templates, schema.history, schema.events
ds, de = schema.delivery_stats, schema.delivery_errors

QUALITY_RANK = {"RED": 0, "YELLOW": 1}  # worst first; anything else after
TEMPLATE_TROUBLE = ("PAUSED", "DISABLED", "FLAGGED", "REJECTED", "LIMIT_EXCEEDED")
NUMBER_FIELDS = ("quality_rating", "status", "messaging_limit")
TEMPLATE_FIELDS = ("status", "quality_score", "category")
TEMPLATES_PER_PAGE = 250
MOVE_POINTS = 0.02  # a rate that moved by two percentage points or more is shown


def ident(row: dict[str, Any]) -> str:
    """How a number is named in URLs: its phone-number ID, else its display number."""
    return str(row.get("phone_number_id") or row.get("display_phone_number") or row["key"])


def names(row: dict[str, Any]) -> set[str]:
    """Every name of a number: its phone-number ID and its display number."""
    return {str(v) for v in (row.get("phone_number_id"), row.get("display_phone_number")) if v}


def filter_choices(conn: Connection, view: View) -> dict[str, Any]:
    """What the filter bar offers: every WABA, and the numbers of the chosen one."""
    return {"wabas": wabas(conn), "number_choices": numbers(conn, view.waba)}


def alert_in_view(alert: dict[str, Any], view: View, rows: Sequence[dict[str, Any]]) -> bool:
    """Alerts of the WABA in view; with a number in view, that number's alerts only."""
    labels = alert["labels"]
    if view.waba and labels.get("waba_id") != view.waba:
        return False
    if not view.number:
        return True
    known = set().union(*(names(r) for r in rows if view.number in names(r))) | {view.number}
    return labels.get("phone_number") in known


def wabas(conn: Connection) -> list[str]:
    """Every WABA something is known of (for the filter)."""
    found = union(
        select(schema.wabas.c.id.label("waba_id")),
        select(p.c.waba_id).where(p.c.waba_id.is_not(None)),
        select(t.c.waba_id).where(t.c.waba_id.is_not(None)).distinct(),
    )
    return sorted(str(w) for (w,) in conn.execute(found) if w)


def numbers(conn: Connection, waba: str | None = None) -> list[dict[str, Any]]:
    query = select(p)
    if waba:
        query = query.where(p.c.waba_id == waba)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:
        row["ident"] = ident(row)
    return sorted(rows, key=lambda r: (r["waba_id"] or "", r["display_phone_number"] or r["ident"]))


def find_number(conn: Connection, number: str) -> dict[str, Any] | None:
    row = queries.find_phone_number(conn, number)
    if row is not None:
        row["ident"] = ident(row)
    return row


def numbers_needing_attention(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Numbers not GREEN, not CONNECTED, or not able to send: worst first."""
    found = [
        r
        for r in rows
        if r["quality_rating"] in QUALITY_RANK
        or (r["status"] and r["status"] != "CONNECTED")
        or r["health_status"] in ("LIMITED", "BLOCKED")
    ]
    return sorted(found, key=lambda r: (QUALITY_RANK.get(r["quality_rating"] or "", 2), r["ident"]))


def templates_needing_attention(
    conn: Connection, waba: str | None, limit: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """Templates not GREEN or in trouble (paused, disabled, flagged...), worst first, and how
    many there are in all."""
    condition = or_(t.c.quality_score.in_(list(QUALITY_RANK)), t.c.status.in_(TEMPLATE_TROUBLE))
    if waba:
        condition = and_(condition, t.c.waba_id == waba)
    worst = case(
        (t.c.status == "DISABLED", 0),
        (t.c.status == "PAUSED", 1),
        (t.c.quality_score == "RED", 2),
        (t.c.status == "FLAGGED", 3),
        (t.c.quality_score == "YELLOW", 4),
        else_=5,
    )
    query = select(t).where(condition).order_by(worst, t.c.name, t.c.id).limit(limit)
    total = conn.execute(select(func.count()).select_from(t).where(condition)).scalar_one()
    return [dict(r) for r in conn.execute(query).mappings()], int(total)


def paused_templates(conn: Connection, waba: str | None) -> list[dict[str, Any]]:
    query = select(t).where(t.c.status == "PAUSED")
    if waba:
        query = query.where(t.c.waba_id == waba)
    return [dict(r) for r in conn.execute(query.order_by(t.c.paused_until, t.c.id)).mappings()]


def counts(conn: Connection, waba: str | None) -> dict[str, dict[str, int]]:
    """Numbers per quality rating, templates per status and per quality."""
    found: dict[str, dict[str, int]] = {}
    for name, table, column in (
        ("quality", p, p.c.quality_rating),
        ("template_status", t, t.c.status),
        ("template_quality", t, t.c.quality_score),
    ):
        query = select(column, func.count()).select_from(table).group_by(column)
        if waba:
            query = query.where(table.c.waba_id == waba)
        found[name] = {str(k or "UNKNOWN"): int(n) for k, n in conn.execute(query)}
    return found


# -- history ------------------------------------------------------------------------------------


@dataclass(slots=True)
class FieldHistory:
    """A field over a range: its value when the range starts, and its changes inside."""

    before: str | None = None
    changes: list[tuple[datetime, str | None]] = field(default_factory=list)


def field_histories(
    conn: Connection,
    kind: SubjectKind,
    key: str,
    fields: Sequence[str],
    start: datetime,
    end: datetime,
) -> dict[str, FieldHistory]:
    found: dict[str, FieldHistory] = {}
    for name in fields:
        subject = and_(h.c.subject_kind == kind.value, h.c.subject_key == key, h.c.field == name)
        before = conn.execute(
            select(h.c.new_value)
            .where(subject, h.c.occurred_at < start)
            .order_by(h.c.occurred_at.desc(), h.c.id.desc())
            .limit(1)
        ).scalar()
        inside = conn.execute(
            select(h.c.occurred_at, h.c.new_value)
            .where(subject, h.c.occurred_at >= start, h.c.occurred_at < end)
            .order_by(h.c.occurred_at, h.c.id)
        ).all()
        found[name] = FieldHistory(before, [(at, value) for at, value in inside])
    return found


def history_rows(
    conn: Connection, kind: SubjectKind, key: str, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    """Every change of a subject in the range, newest first."""
    query = (
        select(h)
        .where(
            h.c.subject_kind == kind.value,
            h.c.subject_key == key,
            h.c.occurred_at >= start,
            h.c.occurred_at < end,
        )
        .order_by(h.c.occurred_at.desc(), h.c.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def earliest(conn: Connection, kind: SubjectKind, key: str) -> datetime | None:
    """When the subject's history starts (per field, through the index)."""
    firsts = [
        conn.execute(
            select(func.min(h.c.occurred_at)).where(
                h.c.subject_kind == kind.value, h.c.subject_key == key, h.c.field == name
            )
        ).scalar()
        for name in (NUMBER_FIELDS if kind is SubjectKind.PHONE_NUMBER else TEMPLATE_FIELDS)
    ]
    found = [moment for moment in firsts if moment is not None]
    return min(found) if found else None


def events(
    conn: Connection,
    kind: SubjectKind,
    subject_ids: Sequence[str],
    start: datetime,
    end: datetime,
    limit: int = 300,
) -> list[dict[str, Any]]:
    """The subject's events in the range, newest first."""
    if not subject_ids:
        return []
    query = (
        select(e.c.id, e.c.field, e.c.kind, e.c.occurred_at, e.c.source, e.c.value)
        .where(
            e.c.subject_kind == kind.value,
            e.c.subject_id.in_(list(subject_ids)),
            e.c.occurred_at >= start,
            e.c.occurred_at < end,
        )
        .order_by(e.c.occurred_at.desc(), e.c.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def recent_changes(
    conn: Connection, waba: str | None, numbers_of_waba: Sequence[dict[str, Any]], limit: int = 25
) -> list[dict[str, Any]]:
    """The latest changes of numbers and templates (of one WABA when given), with names."""
    query = select(h).where(h.c.subject_kind.in_(["phone_number", "template"]))
    if waba:
        keys = [str(r["key"]) for r in numbers_of_waba]
        template_ids = select(t.c.id).where(t.c.waba_id == waba)
        query = query.where(
            or_(
                and_(h.c.subject_kind == "phone_number", h.c.subject_key.in_(keys)),
                and_(h.c.subject_kind == "template", h.c.subject_key.in_(template_ids)),
            )
        )
    rows = [
        dict(r)
        for r in conn.execute(
            query.order_by(h.c.occurred_at.desc(), h.c.id.desc()).limit(limit)
        ).mappings()
    ]
    names = subject_names(conn, rows)
    for row in rows:
        row["subject"] = names.get((row["subject_kind"], row["subject_key"]))
    return rows


def subject_names(
    conn: Connection, rows: Sequence[dict[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, key) → what a link to the subject needs."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    phone_keys = {int(r["subject_key"]) for r in rows if r["subject_kind"] == "phone_number"}
    template_ids = {r["subject_key"] for r in rows if r["subject_kind"] == "template"}
    if phone_keys:
        for row in conn.execute(select(p).where(p.c.key.in_(sorted(phone_keys)))).mappings():
            found[("phone_number", str(row["key"]))] = {**row, "ident": ident(dict(row))}
    if template_ids:
        query = select(t.c.id, t.c.name, t.c.language, t.c.waba_id)
        for row in conn.execute(query.where(t.c.id.in_(sorted(template_ids)))).mappings():
            found[("template", row["id"])] = dict(row)
    return found


def flagged(conn: Connection, row: dict[str, Any], now: datetime) -> Countdown | None:
    """The countdown of a FLAGGED number (``None`` when it is not, or nothing says when)."""
    if row.get("status") != "FLAGGED":
        return None
    key = str(row["key"])
    subject = and_(h.c.subject_kind == "phone_number", h.c.subject_key == key)
    flagged_at = conn.execute(
        select(func.max(h.c.occurred_at)).where(
            subject, h.c.field == "status", h.c.new_value == "FLAGGED"
        )
    ).scalar()
    if flagged_at is None:
        return None
    quality = and_(subject, h.c.field == "quality_rating")
    before = conn.execute(
        select(h.c.new_value)
        .where(quality, h.c.occurred_at <= flagged_at)
        .order_by(h.c.occurred_at.desc(), h.c.id.desc())
        .limit(1)
    ).scalar()
    changes = conn.execute(
        select(h.c.occurred_at, h.c.new_value)
        .where(quality, h.c.occurred_at > flagged_at)
        .order_by(h.c.occurred_at, h.c.id)
    ).all()
    return countdown(flagged_at, before, [(at, value) for at, value in changes], now)


# -- what lies behind a number's rating --------------------------------------------------------


@dataclass(slots=True)
class Behind:
    """For one number: its latest changes and events, the templates of its WABA whose quality
    changed lately, and the delivery signals that moved (this week against the week before)."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)


def behind(
    conn: Connection, rows: Sequence[dict[str, Any]], now: datetime, days: int = 7
) -> dict[str, Behind]:
    """:class:`Behind` of every number in ``rows``, by ``ident``."""
    since = now - timedelta(days=days)
    found = {row["ident"]: Behind() for row in rows}
    for row in rows:
        item = found[row["ident"]]
        item.changes = [
            dict(r._mapping)
            for r in conn.execute(
                select(h.c.field, h.c.old_value, h.c.new_value, h.c.occurred_at)
                .where(
                    h.c.subject_kind == "phone_number",
                    h.c.subject_key == str(row["key"]),
                    h.c.occurred_at >= now - timedelta(days=90),
                )
                .order_by(h.c.occurred_at.desc(), h.c.id.desc())
                .limit(3)
            )
        ]
        ids = [str(x) for x in (row["phone_number_id"], row["display_phone_number"]) if x]
        item.events = events(conn, SubjectKind.PHONE_NUMBER, ids, since, now, limit=3)
    moved = _template_quality_moves(conn, since)
    for row in rows:
        found[row["ident"]].templates = moved.get(row["waba_id"] or "", [])[:5]
    for number, signals in _delivery_moves(conn, rows, now, days).items():
        found[number].signals = signals
    return found


def _template_quality_moves(conn: Connection, since: datetime) -> dict[str, list[dict[str, Any]]]:
    query = (
        select(
            h.c.subject_key, h.c.old_value, h.c.new_value, h.c.occurred_at, t.c.name, t.c.waba_id
        )
        .join(t, t.c.id == h.c.subject_key)
        .where(
            h.c.subject_kind == "template",
            h.c.field == "quality_score",
            h.c.occurred_at >= since,
        )
        .order_by(h.c.occurred_at.desc())
        .limit(500)
    )
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in conn.execute(query).mappings():
        found[row["waba_id"] or ""].append(dict(row))
    return found


def _delivery_moves(
    conn: Connection, rows: Sequence[dict[str, Any]], now: datetime, days: int
) -> dict[str, list[str]]:
    """Rates that moved by ``MOVE_POINTS`` or more, and quality-related error codes that rose."""
    phones = {str(r["phone_number_id"]): r["ident"] for r in rows if r["phone_number_id"]}
    if not phones:
        return {}
    cut, start = now - timedelta(days=days), now - timedelta(days=2 * days)
    recent = case((ds.c.bucket_start >= cut, literal(1)), else_=literal(0))
    sums = [func.sum(ds.c[name]) for name in ("outbound", "sent", "delivered", "read", "failed")]
    query = (
        select(ds.c.phone_number_id, recent, *sums)
        .where(
            ds.c.phone_number_id.in_(sorted(phones)),
            ds.c.template == ALL,
            ds.c.bucket_start >= start,
        )
        .group_by(ds.c.phone_number_id, recent)
    )
    figures: dict[tuple[str, int], tuple[int, ...]] = {}
    for phone, period, *values in conn.execute(query):
        figures[(phone, int(period))] = tuple(int(v or 0) for v in values)
    recent_e = case((de.c.bucket_start >= cut, literal(1)), else_=literal(0))
    query_e = (
        select(de.c.phone_number_id, recent_e, de.c.code, func.sum(de.c.count))
        .where(
            de.c.phone_number_id.in_(sorted(phones)),
            de.c.template == ALL,
            de.c.bucket_start >= start,
            de.c.code.in_(sorted(QUALITY_CODES)),
        )
        .group_by(de.c.phone_number_id, recent_e, de.c.code)
    )
    errors: dict[tuple[str, int], dict[int, int]] = defaultdict(dict)
    for phone, period, code, count in conn.execute(query_e):
        errors[(phone, int(period))][int(code)] = int(count or 0)
    found: dict[str, list[str]] = {}
    for phone, number in phones.items():
        now_f, then_f = figures.get((phone, 1)), figures.get((phone, 0))
        signals: list[str] = []
        if now_f and then_f:
            for name, now_rate, then_rate in (
                ("delivered", rate(now_f[2], now_f[1]), rate(then_f[2], then_f[1])),
                ("read", rate(now_f[3], now_f[2]), rate(then_f[3], then_f[2])),
                ("failed", rate(now_f[4], now_f[0]), rate(then_f[4], then_f[0])),
            ):
                if now_rate is None or then_rate is None:
                    continue
                if abs(now_rate - then_rate) >= MOVE_POINTS:
                    signals.append(f"{name} {then_rate:.0%} → {now_rate:.0%} (week before → last)")
        for code, count in sorted(errors.get((phone, 1), {}).items()):
            before = errors.get((phone, 0), {}).get(code, 0)
            if count > before:
                signals.append(f"error {code} ({QUALITY_CODES[code]}): {before} → {count}")
        if signals:
            found[number] = signals
    return found


# -- templates ----------------------------------------------------------------------------------


def templates(
    conn: Connection,
    *,
    waba: str | None,
    status: str | None,
    quality: str | None,
    category: str | None,
    name: str | None,
    page: int,
) -> tuple[list[dict[str, Any]], int]:
    """One page of templates (trouble first, then by name) and how many match."""
    conditions = []
    for column, value in ((t.c.waba_id, waba), (t.c.status, status), (t.c.category, category)):
        if value:
            conditions.append(column == value)
    if quality:
        conditions.append(
            t.c.quality_score.is_(None) if quality == "UNKNOWN" else t.c.quality_score == quality
        )
    if name:
        conditions.append(func.lower(t.c.name).contains(name.lower(), autoescape=True))
    where = and_(true(), *conditions)
    trouble = case((t.c.status.in_(TEMPLATE_TROUBLE), 0), else_=1)
    query = (
        select(t)
        .where(where)
        .order_by(trouble, t.c.name, t.c.language, t.c.id)
        .offset(page * TEMPLATES_PER_PAGE)
        .limit(TEMPLATES_PER_PAGE)
    )
    total = conn.execute(select(func.count()).select_from(t).where(where)).scalar_one()
    return [dict(r) for r in conn.execute(query).mappings()], int(total)


def template_values(conn: Connection, column: str) -> list[str]:
    """The values a template column takes (for the filters)."""
    query = select(t.c[column]).where(t.c[column].is_not(None)).distinct()
    return sorted(str(v) for (v,) in conn.execute(query))
