"""Apply state changes to the current-state tables and write their history.

Rules:
- per field, the newest event wins: a change older than the field's ``as_of`` goes into history
  (between the rows around it) but never overwrites the current value;
- only a real change (old ≠ new) creates a history row;
- rows are locked (``FOR UPDATE`` on PostgreSQL) in a fixed order, so concurrent workers never
  lose an update and never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    Table,
    and_,
    bindparam,
    delete,
    select,
    union_all,
    update,
    values,
)
from sqlalchemy import column as sql_column

from waquality.domain.enums import SubjectKind, TemplateStatus
from waquality.domain.events import PhoneJoin
from waquality.process.interpret import UNTRACKED_FIELDS, Op, StateChange, StateValue, SubjectRef
from waquality.store import schema
from waquality.store.database import Database

_PK = {SubjectKind.PHONE_NUMBER: "key"}
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

    def __init__(self, db: Database, conn: Connection, now: datetime, source: str) -> None:
        self.db, self.conn, self.now, self.source = db, conn, now, source
        self._rows: dict[tuple[SubjectKind, Any], dict[str, Any]] = {}
        self._refs: dict[SubjectRef, tuple[SubjectKind, Any]] = {}
        self._dirty: set[tuple[SubjectKind, Any]] = set()
        self._history: list[dict[str, Any]] = []
        # Older facts (their subject and history row), slotted into history at the end.
        self._late: list[tuple[tuple[SubjectKind, Any], dict[str, Any]]] = []
        self.history_written = 0
        self.changed: list[Changed] = []  # current values that changed, in order

    # -- public -------------------------------------------------------------------------------

    def apply(self, changes: Sequence[TimedChange]) -> int:
        """Apply ``changes`` (in any order); returns how many history rows were written."""
        ordered = sorted(changes, key=lambda c: c.occurred_at)
        self._load({c.change.subject for c in ordered})
        for timed in ordered:
            self._apply_one(timed)
        self._apply_late()
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
        current = row[field]
        match change.op:
            case Op.SET:
                if epoch < row["as_of"].get(field, float("-inf")):
                    if field not in UNTRACKED_FIELDS:
                        late = self._history_row(
                            ident, field, None, change.value, at, timed.event_id
                        )
                        self._late.append((ident, late))
                    return
                new = stored(change.value)
            case Op.AT_LEAST:
                new = max(int(current or 0), _count(change.value))
            case Op.INCREMENT:
                new = int(current or 0) + _count(change.value)
            case Op.RESTORE:
                if epoch < row["as_of"].get(field, float("-inf")) or current != change.value:
                    return
                new = self._value_before(ident, field) or TemplateStatus.UNKNOWN.value
        row["as_of"][field] = max(epoch, row["as_of"].get(field, epoch))
        self._dirty.add(ident)
        if new == current:
            return
        row[field] = new
        if field not in UNTRACKED_FIELDS:
            self._history.append(self._history_row(ident, field, current, new, at, timed.event_id))
            self.changed.append(Changed(ident[0], row, field, current, new, at))
        for follow_up in self._follow_ups(ident, row, field):
            if follow_up.subject not in self._refs:
                self._load([follow_up.subject])
            self._apply_one(TimedChange(follow_up, at, timed.event_id))

    def _follow_ups(
        self, ident: tuple[SubjectKind, Any], row: dict[str, Any], field: str
    ) -> list[StateChange]:
        """A WABA's messaging limit is its business portfolio's limit."""
        kind, _ = ident
        portfolio = kind is SubjectKind.WABA and field in ("messaging_limit", "business_id")
        if portfolio and row["business_id"] and row["messaging_limit"]:
            business = SubjectRef(SubjectKind.BUSINESS, row["business_id"])
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
        kind, key = ident
        return {
            "subject_kind": kind.value,
            "subject_key": str(key),
            "field": field,
            "old_value": history_text(old),
            "new_value": history_text(new),
            "occurred_at": at,
            "recorded_at": self.now,
            "source": self.source,
            "event_id": event_id,
        }

    def _apply_late(self) -> None:
        """Slot the older facts of this batch into history, without touching current values.

        One query reads, per (subject, field), the history around the span of its late facts;
        the merge happens here; the fixes go out in at most three statements.
        """
        # Newest first: each fact then meets the newer ones of this batch already in place,
        # exactly as if they had arrived one by one in reverse, the usual shape of a delay.
        late = sorted(self._late, key=lambda item: item[1]["occurred_at"], reverse=True)
        self._late = []
        if not late:
            return
        self._flush_history()
        spans: dict[tuple[str, str, str], tuple[datetime, datetime]] = {}
        for _, row in late:  # newest first: the first sighting is the end of the span
            key, at = (row["subject_kind"], row["subject_key"], row["field"]), row["occurred_at"]
            spans[key] = (at, spans.get(key, (at, at))[1])
        timelines = self._timelines(spans)
        updates: dict[int, str | None] = {}
        deletes: set[int] = set()
        for ident, row in late:
            timeline = timelines[(row["subject_kind"], row["subject_key"], row["field"])]
            at = row["occurred_at"]
            position = next(
                (i for i, e in enumerate(timeline) if e["occurred_at"] > at), len(timeline)
            )
            before = timeline[position - 1]["new_value"] if position else None
            if before == row["new_value"]:
                continue
            row["old_value"] = before
            timeline.insert(position, row)
            self._history.append(row)
            if position + 1 == len(timeline):
                self._close_timeline(ident, row, timeline)
                continue
            after = timeline[position + 1]
            if after["new_value"] == row["new_value"]:  # the next row no longer changes anything
                del timeline[position + 1]
                if "id" in after:
                    deletes.add(after["id"])
                    updates.pop(after["id"], None)
                else:
                    self._history = [r for r in self._history if r is not after]
            else:
                after["old_value"] = row["new_value"]
                if "id" in after:
                    updates[after["id"]] = row["new_value"]
        h = schema.history
        if deletes:
            self.conn.execute(delete(h).where(h.c.id.in_(sorted(deletes))))
        if updates:
            self.conn.execute(
                update(h).where(h.c.id == bindparam("_id")).values(old_value=bindparam("_old")),
                [{"_id": i, "_old": old} for i, old in sorted(updates.items())],
            )

    def _close_timeline(
        self, ident: tuple[SubjectKind, Any], last: dict[str, Any], timeline: list[dict[str, Any]]
    ) -> None:
        """History ends in the current value: a late fact that became the last row is followed
        by the fact that set the current value (which changed nothing when it arrived)."""
        row, field = self._rows[ident], last["field"]
        if history_text(row[field]) == last["new_value"]:
            return
        confirmed = datetime.fromtimestamp(row["as_of"][field], UTC)
        back = self._history_row(ident, field, last["new_value"], row[field], confirmed, None)
        timeline.append(back)
        self._history.append(back)

    def _timelines(
        self, since: dict[tuple[str, str, str], tuple[datetime, datetime]]
    ) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
        """Per (subject kind, key, field) and its span of late facts: the history rows within
        the span and the one on each side of it, oldest first. One statement for all keys."""
        h, h2 = schema.history, schema.history.alias("h2")
        keys = values(
            sql_column("kind", String),
            sql_column("key", String),
            sql_column("field", String),
            sql_column("since", schema.UTCDateTime),
            sql_column("until", schema.UTCDateTime),
            name="late_keys",
        )
        rows = [(*key, first, last) for key, (first, last) in sorted(since.items())]
        k = keys.data(rows).cte("late_keys")
        columns = (h.c.id, h.c.subject_kind, h.c.subject_key, h.c.field, h.c.occurred_at)
        same2 = and_(
            h2.c.subject_kind == k.c.kind, h2.c.subject_key == k.c.key, h2.c.field == k.c.field
        )
        last_before = (
            select(h2.c.id)
            .where(same2, h2.c.occurred_at <= k.c.since)
            .order_by(h2.c.occurred_at.desc(), h2.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        first_after = (
            select(h2.c.id)
            .where(same2, h2.c.occurred_at > k.c.until)
            .order_by(h2.c.occurred_at, h2.c.id)
            .limit(1)
            .scalar_subquery()
        )
        same = and_(
            h.c.subject_kind == k.c.kind, h.c.subject_key == k.c.key, h.c.field == k.c.field
        )
        between = and_(same, h.c.occurred_at > k.c.since, h.c.occurred_at <= k.c.until)
        query = union_all(
            *(
                select(*columns, h.c.new_value).select_from(k.join(h, condition))
                for condition in (between, h.c.id == last_before, h.c.id == first_after)
            )
        )
        timelines: dict[tuple[str, str, str], list[dict[str, Any]]] = {key: [] for key in since}
        for found in self.conn.execute(query):
            timelines[(found.subject_kind, found.subject_key, found.field)].append(
                {"id": found.id, "occurred_at": found.occurred_at, "new_value": found.new_value}
            )
        for timeline in timelines.values():
            timeline.sort(key=lambda e: (e["occurred_at"], e["id"]))
        return timelines

    def _value_before(self, ident: tuple[SubjectKind, Any], field: str) -> str | None:
        self._apply_late()
        self._flush_history()
        h = schema.history
        return self.conn.execute(
            select(h.c.old_value)
            .where(
                h.c.subject_kind == ident[0].value,
                h.c.subject_key == str(ident[1]),
                h.c.field == field,
            )
            .order_by(h.c.occurred_at.desc(), h.c.id.desc())
            .limit(1)
        ).scalar()

    # -- writing ------------------------------------------------------------------------------

    def _flush_history(self) -> None:
        if self._history:
            self.conn.execute(schema.history.insert(), self._history)
            self.history_written += len(self._history)
            self._history = []

    def _flush(self) -> None:
        self._flush_history()
        for kind in SubjectKind:
            dirty = [self._rows[i] for i in sorted(self._dirty, key=str) if i[0] is kind]
            if not dirty:
                continue
            table = schema.STATE_TABLES[kind]
            pk = _PK.get(kind, "id")
            columns = [c.key for c in table.c if c.key != pk]
            statement = (
                update(table)
                .where(table.c[pk] == bindparam("_pk"))
                .values({c: bindparam(f"_{c}") for c in columns})
            )
            params = []
            for row in dirty:
                row["updated_at"] = self.now
                params.append({"_pk": row[pk], **{f"_{c}": row[c] for c in columns}})
            self.conn.execute(statement, params)
        self._dirty.clear()


def _count(value: StateValue) -> int:
    return value if isinstance(value, int) else 0


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
    conn.execute(
        h.update()
        .where(
            h.c.subject_kind == SubjectKind.PHONE_NUMBER.value, h.c.subject_key == str(other["key"])
        )
        .values(subject_key=str(into["key"]))
    )
    conn.execute(delete(t).where(t.c.key == other["key"]))
    conn.execute(update(t).where(t.c.key == into["key"]).values(values))
