"""Apply state changes to the current-state tables and write their history.

Rules:
- every fact about a tracked field is kept (``facts``), and a field's history is the replay of
  its facts in time order (:mod:`waquality.domain.timeline`): whatever order the facts arrive
  in, history and current value come out the same;
- a fact newer than the field's ``as_of`` is applied at once (the usual case); an older one, or
  a restore, makes the field's history be replayed from its facts;
- only a real change (old ≠ new) creates a history row;
- rows are locked (``FOR UPDATE`` on PostgreSQL) in a fixed order, so concurrent workers never
  lose an update and never deadlock.

Polls confirm every value every few minutes: a confirmation that changes nothing is not kept as
a fact (it only moves ``as_of``), so a field whose newest confirmation is such a poll keeps its
current value when older facts are replayed, and its history ends in a row at that confirmation.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    delete,
    select,
    update,
)

from waquality.domain.enums import Source, SubjectKind
from waquality.domain.events import PhoneJoin
from waquality.domain.timeline import Fact, Step, Timeline, replay_until_met
from waquality.process.interpret import UNTRACKED_FIELDS, Op, StateChange, StateValue, SubjectRef
from waquality.store import bulk, schema
from waquality.store.database import Database
from waquality.store.keys import KeyTable
from waquality.store.keys import params as key_params
from waquality.store.stats import chunks

_PK = {SubjectKind.PHONE_NUMBER: "key"}
REPLAY_KEYS_PER_QUERY = 100  # fields one replay statement reads or deletes
REPLAY_FIRST_PAGE = 64  # facts a field's replay reads first (see StateWriter._replay)
# Rows are locked kind by kind in this order, keys sorted within a kind (businesses last: they
# are reached from WABAs).
LOCK_ORDER = (
    SubjectKind.WABA,
    SubjectKind.PHONE_NUMBER,
    SubjectKind.TEMPLATE,
    SubjectKind.BUSINESS,
)


@dataclass(frozen=True, slots=True)
class Changed:
    """A change of a current value (not a late fact slotted into history). ``row`` is the
    subject's row as the batch leaves it, for context."""

    kind: SubjectKind
    row: dict[str, Any]
    field: str
    old: Any
    new: Any
    at: datetime


@dataclass(frozen=True, slots=True)
class TimedChange:
    change: StateChange
    occurred_at: datetime
    event_id: int | None


def stored(value: StateValue) -> StateValue:
    """The value as a column holds it (enums as their string)."""
    return value.value if isinstance(value, Enum) else value


def history_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class StateWriter:
    """Applies one batch of changes inside the caller's write transaction."""

    def __init__(
        self,
        db: Database,
        conn: Connection,
        now: datetime,
        source: str,
        *,
        keep_confirmations: bool = True,
    ) -> None:
        """``keep_confirmations``: keep facts that change nothing (webhooks: yes; polls, which
        confirm every value every few minutes: no)."""
        self.db, self.conn, self.now, self.source = db, conn, now, source
        self.keep_confirmations = keep_confirmations
        self._facts: list[dict[str, Any]] = []
        # fields whose history is replayed at the end: the oldest and newest late fact's time
        self._replays: dict[tuple[tuple[SubjectKind, Any], str], tuple[datetime, datetime]] = {}
        self._rows: dict[tuple[SubjectKind, Any], dict[str, Any]] = {}
        self._refs: dict[SubjectRef, tuple[SubjectKind, Any]] = {}
        self._dirty: set[tuple[SubjectKind, Any]] = set()
        self._history: list[dict[str, Any]] = []
        self.history_written = 0
        self.changed: list[Changed] = []  # current values that changed, in order

    # -- public -------------------------------------------------------------------------------

    def apply(self, changes: Sequence[TimedChange]) -> int:
        """Apply ``changes`` (in any order); returns how many history rows were written."""
        ordered = sorted(changes, key=lambda c: c.occurred_at)
        self._load({c.change.subject for c in ordered})
        for timed in ordered:
            self._apply_one(timed)
        self._replay()
        self._flush()
        return self.history_written

    # -- loading ------------------------------------------------------------------------------

    def _load(self, refs: Iterable[SubjectRef]) -> None:
        missing = [r for r in refs if r not in self._refs]
        for kind in LOCK_ORDER:
            wanted = sorted((r for r in missing if r.kind is kind), key=lambda r: r.key)
            if wanted:
                self._load_kind(kind, wanted)

    def _load_kind(self, kind: SubjectKind, refs: list[SubjectRef]) -> None:
        table = schema.STATE_TABLES[kind]
        by_display = [r for r in refs if r.by_display]
        by_id = [r for r in refs if not r.by_display]
        if kind is SubjectKind.PHONE_NUMBER:
            groups = [(by_id, table.c.phone_number_id), (by_display, table.c.display_phone_number)]
        else:
            groups = [(by_id, table.c.id)]
        for group, column in groups:
            if not group:
                continue
            keys = sorted({r.key for r in group})
            found = self._select(table, column.in_(keys))
            absent = [r for r in group if r.key not in {row[column.key] for row in found}]
            if absent:
                self._create(kind, table, column.key, absent)
                found = self._select(table, column.in_(keys))
            by_key = {row[column.key]: row for row in found}
            pk = _PK.get(kind, "id")
            for ref in group:
                row = by_key[ref.key]
                self._rows.setdefault((kind, row[pk]), row)
                self._refs[ref] = (kind, row[pk])
                self._adopt_waba(kind, row, ref)

    def _select(self, table: Table, condition: Any) -> list[dict[str, Any]]:
        pk = table.c.get("key", table.c.get("id"))
        query = select(table).where(condition).order_by(pk).with_for_update()
        rows = [dict(row._mapping) for row in self.conn.execute(query)]
        for row in rows:
            row["as_of"] = dict(row["as_of"] or {})
        return rows

    def _create(self, kind: SubjectKind, table: Table, column: str, refs: list[SubjectRef]) -> None:
        values = []
        for ref in refs:
            row: dict[str, Any] = {column: ref.key, "updated_at": self.now, "as_of": {}}
            if kind in (SubjectKind.PHONE_NUMBER, SubjectKind.TEMPLATE):
                row["waba_id"] = ref.waba_id
            if kind is SubjectKind.TEMPLATE:
                row.update(pause_count=0, rate_limit_pause_count=0)
            values.append(row)
        self.db.create_missing(self.conn, table, values)

    def _adopt_waba(self, kind: SubjectKind, row: dict[str, Any], ref: SubjectRef) -> None:
        has_waba = kind in (SubjectKind.PHONE_NUMBER, SubjectKind.TEMPLATE)
        if has_waba and ref.waba_id and row["waba_id"] != ref.waba_id:
            row["waba_id"] = ref.waba_id
            self._dirty.add(self._refs[ref])

    # -- applying -----------------------------------------------------------------------------

    def _apply_one(self, timed: TimedChange) -> None:
        change = timed.change
        ident = self._refs[change.subject]
        row = self._rows[ident]
        field, at = change.field, timed.occurred_at
        epoch = at.timestamp()
        newest = row["as_of"].get(field, float("-inf"))
        if field in UNTRACKED_FIELDS:  # no history: the newest value wins, and that is all
            if epoch >= newest:
                row["as_of"][field] = epoch
                if row[field] != stored(change.value):
                    row[field] = stored(change.value)
                    self._dirty.add(ident)
            return
        fact = self._fact(ident, field, change, at, timed.event_id)
        if epoch < newest or change.op is Op.RESTORE:  # replay the field at the end
            self._facts.append(fact)
            first, last = self._replays.get((ident, field), (at, at))
            self._replays[(ident, field)] = (min(first, at), max(last, at))
            for follow_up in self._follow_ups(ident, row, field, change.value):
                self._apply_change(follow_up, at, timed.event_id)
            return
        current = row[field]
        match change.op:
            case Op.AT_LEAST:
                new: StateValue = max(int(current or 0), _count(change.value))
            case Op.INCREMENT:
                new = int(current or 0) + _count(change.value)
            case _:
                new = stored(change.value)
        row["as_of"][field] = epoch
        self._dirty.add(ident)
        if new == current:
            if self.keep_confirmations:
                self._facts.append(fact)
            return
        row[field] = new
        self._facts.append(fact)
        self._history.append(self._history_row(ident, field, current, new, at, timed.event_id))
        self.changed.append(Changed(ident[0], row, field, current, new, at))
        for follow_up in self._follow_ups(ident, row, field, new):
            self._apply_change(follow_up, at, timed.event_id)

    def _apply_change(self, change: StateChange, at: datetime, event_id: int | None) -> None:
        if change.subject not in self._refs:
            self._load([change.subject])
        self._apply_one(TimedChange(change, at, event_id))

    def _fact(
        self,
        ident: tuple[SubjectKind, Any],
        field: str,
        change: StateChange,
        at: datetime,
        event_id: int | None,
    ) -> dict[str, Any]:
        values = {"op": change.op.value, "value": history_text(change.value)}
        return self._about(ident, field, values, at, event_id)

    def _about(
        self,
        ident: tuple[SubjectKind, Any],
        field: str,
        values: dict[str, Any],
        at: datetime,
        event_id: int | None,
    ) -> dict[str, Any]:
        """A fact's or history row's columns: what, when, from where."""
        kind, key = ident
        return {
            "subject_kind": kind.value,
            "subject_key": str(key),
            "field": field,
            **values,
            "occurred_at": at,
            "recorded_at": self.now,
            "source": self.source,
            "event_id": event_id,
        }

    def _follow_ups(
        self, ident: tuple[SubjectKind, Any], row: dict[str, Any], field: str, value: StateValue
    ) -> list[StateChange]:
        """A WABA's messaging limit is its business portfolio's limit."""
        kind, _ = ident
        if kind is not SubjectKind.WABA or not row["business_id"]:
            return []
        business = SubjectRef(SubjectKind.BUSINESS, row["business_id"])
        if field == "messaging_limit" and value:
            return [StateChange(business, "messaging_limit", value)]
        if field == "business_id" and row["messaging_limit"]:
            return [StateChange(business, "messaging_limit", row["messaging_limit"])]
        return []

    def _history_row(
        self,
        ident: tuple[SubjectKind, Any],
        field: str,
        old: Any,
        new: Any,
        at: datetime,
        event_id: int | None,
    ) -> dict[str, Any]:
        values = {"old_value": history_text(old), "new_value": history_text(new)}
        return self._about(ident, field, values, at, event_id)

    def _replay(self) -> None:
        """Replay the history of every field an older fact (or a restore) touched, from that
        fact's time on: history before it stays as it is (a late fact cannot change it), and
        so does history after it once the replay meets it again (the same value, replacing
        the same one, after the last late fact), so that a late fact costs about what it
        changes, however long the field's history. The rows in between are replaced by the
        replayed ones; a replay that never meets the old history replaces all of it from the
        late fact on and sets the current value the facts give (unless a newer confirmation
        that changed nothing holds it).

        The facts are read a page at a time (``REPLAY_FIRST_PAGE``, then four times the page
        before), beside the old history of the same span, until the replay meets the old
        history within what it read or there is no more to read; every field of a round in
        three statements, whatever their number."""
        wanted, self._replays = sorted(self._replays.items(), key=str), {}
        if not wanted:
            return
        self._flush_history()
        late: dict[_FieldKey, tuple[datetime, datetime]] = {}
        idents: dict[_FieldKey, tuple[tuple[SubjectKind, Any], str]] = {}
        for (ident, field), span in wanted:
            key = (ident[0].value, str(ident[1]), field)
            late[key], idents[key] = span, (ident, field)
        replaced: dict[_FieldKey, datetime | None] = {}  # until when (None: to the end)
        page = REPLAY_FIRST_PAGE
        while len(replaced) < len(late):
            pending = [key for key in late if key not in replaced]
            ends, starts = self._page_ends(pending, late, page)
            facts, old = self._read_spans(pending, late, ends)
            for key in pending:
                (value, before), (_, last) = starts[key], late[key]
                timeline, until = replay_until_met(facts[key], value, before, old[key], last)
                if until is None and ends[key] is not None:
                    continue  # not met within the page: read a larger one
                replaced[key] = until
                for step in timeline.steps:
                    self._history.append(self._step_row(key, step.old, step.new, step.fact))
                if timeline.newest is not None:
                    ident, field = idents[key]
                    self._settle(ident, field, key, timeline, met=until is not None)
            page *= 4
        dialect = self.conn.dialect.name
        for chunk in chunks(list(replaced), REPLAY_KEYS_PER_QUERY):
            rows = [(*key, late[key][0], replaced[key] or _NO_END) for key in chunk]
            self.conn.execute(_replay_statement(dialect, "replaced"), key_params(dialect, 5, rows))

    def _page_ends(
        self,
        keys: list[_FieldKey],
        late: dict[_FieldKey, tuple[datetime, datetime]],
        page: int,
    ) -> tuple[dict[_FieldKey, datetime | None], dict[_FieldKey, tuple[str | None, str | None]]]:
        """Where each field's page of facts from its first late fact ends (the time of its
        ``page``-th fact, not included: a page may end amid facts of one time), ``None`` when
        fewer are left; and each field's value just before its first late fact and the value
        that one replaced, from its history."""
        dialect = self.conn.dialect.name
        ends: dict[_FieldKey, datetime | None] = {}
        values: dict[_FieldKey, tuple[str | None, str | None]] = {}
        for chunk in chunks(keys, REPLAY_KEYS_PER_QUERY):
            rows = [(*key, late[key][0]) for key in chunk]
            params = {**key_params(dialect, 4, rows), "skip": page - 1}
            for kind, subject, field, end, value, before in self.conn.execute(
                _replay_statement(dialect, "ends"), params
            ):
                key = (kind, subject, field)
                ends[key] = end
                found = value is not None or before is not None
                values[key] = (value, before) if found else (_INITIAL.get(field), None)
        return ends, values

    def _read_spans(
        self,
        keys: list[_FieldKey],
        late: dict[_FieldKey, tuple[datetime, datetime]],
        ends: dict[_FieldKey, datetime | None],
    ) -> tuple[dict[_FieldKey, list[Fact]], dict[_FieldKey, list[Step]]]:
        """Each field's facts and old history from its first late fact to its page's end."""
        dialect = self.conn.dialect.name
        facts: dict[_FieldKey, list[Fact]] = {key: [] for key in keys}
        old: dict[_FieldKey, list[Step]] = {key: [] for key in keys}
        for chunk in chunks(keys, REPLAY_KEYS_PER_QUERY):
            rows = [(*key, late[key][0], ends[key] or _NO_END) for key in chunk]
            params = key_params(dialect, 5, rows)
            for r in self.conn.execute(_replay_statement(dialect, "facts"), params):
                facts[(r.subject_kind, r.subject_key, r.field)].append(
                    Fact(
                        Op(r.op), r.value, r.occurred_at, r.source, r.event_id, r.recorded_at, r.id
                    )
                )
            for r in self.conn.execute(_replay_statement(dialect, "history"), params):
                was = Fact(Op.SET, r.new_value, r.occurred_at, r.source, r.event_id, r.recorded_at)
                old[(r.subject_kind, r.subject_key, r.field)].append(
                    Step(r.old_value, r.new_value, was)
                )
        return facts, old

    def _settle(
        self,
        ident: tuple[SubjectKind, Any],
        field: str,
        key: _FieldKey,
        timeline: Timeline,
        *,
        met: bool,
    ) -> None:
        """The field's time and current value after a replay: ``met``, it met the old history
        again, which from there on stands, and so does the current value."""
        assert timeline.newest is not None
        row = self._rows[ident]
        newest = max(row["as_of"].get(field, float("-inf")), timeline.newest.timestamp())
        row["as_of"][field] = newest
        self._dirty.add(ident)
        if met:
            return
        current = history_text(row[field])
        if newest > timeline.newest.timestamp():  # a newer confirmation holds the value
            if current != timeline.value:
                at = datetime.fromtimestamp(newest, UTC)
                back = Fact(Op.SET, current, at, Source.POLL.value, None, self.now)
                self._history.append(self._step_row(key, timeline.value, current, back))
            return
        if current != timeline.value:
            new = _typed(schema.STATE_TABLES[ident[0]].c[field], timeline.value)
            self.changed.append(Changed(ident[0], row, field, row[field], new, timeline.newest))
            row[field] = new

    def _step_row(
        self, key: _FieldKey, old: str | None, new: str | None, fact: Fact
    ) -> dict[str, Any]:
        return {
            "subject_kind": key[0],
            "subject_key": key[1],
            "field": key[2],
            "old_value": old,
            "new_value": new,
            "occurred_at": fact.occurred_at,
            "recorded_at": fact.recorded_at,
            "source": fact.source,
            "event_id": fact.event_id,
        }

    # -- writing ------------------------------------------------------------------------------

    def _flush_history(self) -> None:
        bulk.insert(self.conn, schema.facts, self._facts)
        self._facts = []
        bulk.insert(self.conn, schema.history, self._history)
        self.history_written += len(self._history)
        self._history = []

    def _flush(self) -> None:
        self._flush_history()
        for kind in SubjectKind:
            dirty = [self._rows[i] for i in sorted(self._dirty, key=str) if i[0] is kind]
            if not dirty:
                continue
            table = schema.STATE_TABLES[kind]
            columns = [c.key for c in table.c]
            for row in dirty:
                row["updated_at"] = self.now
            rows = [{c: row[c] for c in columns} for row in dirty]
            bulk.update(self.conn, table, rows, by=(_PK.get(kind, "id"),))
        self._dirty.clear()


_FieldKey = tuple[str, str, str]  # subject kind, subject key, field
_NO_END = datetime(9999, 12, 31, tzinfo=UTC)  # a span's end when it has none


@functools.cache
def _replay_statement(dialect: str, name: str) -> Any:
    """A replay's statements, each for many fields at once (see :mod:`waquality.store.keys`),
    built once per database kind:

    - ``ends``: for (kind, key, field, since) and ``skip``, the time of the field's fact at
      that offset from ``since`` on, and its history's value before ``since`` and the one
      that value replaced;
    - ``facts``, ``history``: for (kind, key, field, since, end), the rows in [since, end);
    - ``replaced``: for (kind, key, field, since, until), deletes the history in
      [since, until].
    """
    f, h = schema.facts, schema.history
    text, time = String(), schema.UTCDateTime()
    if name == "ends":
        keys = KeyTable(dialect, (text, text, text, time))
        kind, subject, field, since = keys.columns

        def about(table: Table) -> Any:
            c = table.c
            return and_(c.subject_kind == kind, c.subject_key == subject, c.field == field)

        end = (
            select(f.c.occurred_at)
            .where(about(f), f.c.occurred_at >= since)
            .order_by(f.c.occurred_at, f.c.id)
            .offset(bindparam("skip"))
            .limit(1)
            .scalar_subquery()
        )

        def before(column: Any) -> Any:
            return (
                select(column)
                .where(about(h), h.c.occurred_at < since)
                .order_by(h.c.occurred_at.desc(), h.c.id.desc())
                .limit(1)
                .scalar_subquery()
            )

        columns = (kind, subject, field, end, before(h.c.new_value), before(h.c.old_value))
        return select(*columns).select_from(keys.table)
    keys = KeyTable(dialect, (text, text, text, time, time))
    kind, subject, field, since, until = keys.columns
    table = f if name == "facts" else h
    c = table.c
    on = and_(
        c.subject_kind == kind,
        c.subject_key == subject,
        c.field == field,
        c.occurred_at >= since,
        c.occurred_at <= until if name == "replaced" else c.occurred_at < until,
    )
    found = select(table).select_from(keys.table).join(table, on)
    if name == "replaced":
        return delete(h).where(h.c.id.in_(found.with_only_columns(h.c.id)))
    return found.order_by(c.occurred_at, c.id)


def _count(value: StateValue) -> int:
    return value if isinstance(value, int) else 0


# Where a field's replay starts: counters from zero (as new template rows do), the rest from
# nothing.
_INITIAL = {"pause_count": "0", "rate_limit_pause_count": "0"}


def _typed(column: Any, text: str | None) -> Any:
    """A history text back into the column's type."""
    if text is None:
        return None
    kind = column.type
    if isinstance(kind, schema.UTCDateTime):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    if isinstance(kind, Boolean):
        return text == "true"
    if isinstance(kind, Integer):  # BigInteger too
        return int(text)
    return text


def join_phone(db: Database, conn: Connection, join: PhoneJoin, now: datetime) -> None:
    """Tie a display number to its phone-number ID, merging a display-only row into it."""
    t = schema.phone_numbers
    by_id = (
        conn.execute(select(t).where(t.c.phone_number_id == join.phone_number_id).with_for_update())
        .mappings()
        .first()
    )
    by_display = (
        conn.execute(
            select(t).where(t.c.display_phone_number == join.display_phone_number).with_for_update()
        )
        .mappings()
        .first()
    )
    if by_id is not None and by_display is not None:
        if by_id["key"] != by_display["key"] and by_display["phone_number_id"] is None:
            _merge(conn, into=dict(by_id), other=dict(by_display), now=now)
        return
    if by_id is not None:
        if by_id["display_phone_number"] is None:
            conn.execute(
                update(t)
                .where(t.c.key == by_id["key"])
                .values(display_phone_number=join.display_phone_number)
            )
        return
    if by_display is not None:
        if by_display["phone_number_id"] is None:
            conn.execute(
                update(t)
                .where(t.c.key == by_display["key"])
                .values(
                    phone_number_id=join.phone_number_id,
                    waba_id=by_display["waba_id"] or join.waba_id,
                )
            )
        return
    conn.execute(
        t.insert().values(
            phone_number_id=join.phone_number_id,
            display_phone_number=join.display_phone_number,
            waba_id=join.waba_id,
            updated_at=now,
            as_of={},
        )
    )


def _merge(conn: Connection, *, into: dict[str, Any], other: dict[str, Any], now: datetime) -> None:
    t, h = schema.phone_numbers, schema.history
    as_of = dict(into["as_of"] or {})
    values: dict[str, Any] = {
        "display_phone_number": other["display_phone_number"],
        "updated_at": now,
    }
    for field, stamp in (other["as_of"] or {}).items():
        if stamp >= as_of.get(field, float("-inf")):
            values[field] = other[field]
            as_of[field] = stamp
    values["as_of"] = as_of
    values["waba_id"] = into["waba_id"] or other["waba_id"]
    for table in (h, schema.facts):
        conn.execute(
            table.update()
            .where(
                table.c.subject_kind == SubjectKind.PHONE_NUMBER.value,
                table.c.subject_key == str(other["key"]),
            )
            .values(subject_key=str(into["key"]))
        )
    conn.execute(delete(t).where(t.c.key == other["key"]))
    conn.execute(update(t).where(t.c.key == into["key"]).values(values))
