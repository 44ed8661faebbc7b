"""Bulk writes through the driver store exactly what SQLAlchemy's own executemany stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import String, Text, and_, cast, select

from waquality.store import bulk, keys, schema
from waquality.store.database import Database

m, ds = schema.messages, schema.delivery_stats
T = datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)
PLUS_FIVE = timezone(timedelta(hours=5))


def message(wamid: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.key: None for c in m.c}
    row.update(wamid=wamid, inbound=False, sender_kind="unknown", updated_at=T)
    row.update(values)
    return row


ROWS = [
    message("w.1", at=T, sent_at=T, status="sent", experiments=[["cta", "b"]], body="héllo 👋"),
    message("w.2", inbound=True, at=T.astimezone(PLUS_FIVE), error_code=131049),
    message("w.3", at=datetime(2026, 1, 1, tzinfo=UTC), read_at=T + timedelta(microseconds=1)),
    message("w.4", at=T, sent_at=T, delivered_at=T, updated_at=T),  # times repeat
    message("w.5"),  # every time column empty
]


def stored(db: Database, table: Any = m) -> dict[Any, dict[str, Any]]:
    with db.read() as conn:
        found = conn.execute(select(table)).mappings().all()
    key = (lambda r: r["wamid"]) if table is m else (lambda r: (r["template"], r["bucket_start"]))
    return {key(row): dict(row) for row in found}


def test_rows_come_back_as_sqlalchemy_stores_them(db: Database) -> None:
    with db.write() as conn:
        conn.execute(m.insert(), [{**row, "wamid": "sa" + row["wamid"]} for row in ROWS])
        bulk.insert(conn, m, ROWS)
    found = stored(db)
    for row in ROWS:
        mine, theirs = found[row["wamid"]], found["sa" + row["wamid"]]
        assert {**mine, "wamid": None} == {**theirs, "wamid": None}
        assert mine["at"] == row["at"]  # the same instant, whatever zone it was given in
    assert found["w.2"]["at"].tzinfo is UTC
    assert found["w.1"]["experiments"] == [["cta", "b"]]
    assert found["w.1"]["body"] == "héllo 👋"
    assert found["w.2"]["inbound"] is True
    assert found["w.3"]["read_at"] == T + timedelta(microseconds=1)
    assert found["w.5"]["at"] is None


def test_json_values_equal_in_python_are_stored_as_given(db: Database) -> None:
    values: list[Any] = [1, True, 0, False, "1"]  # 1 == True and 0 == False, yet not as JSON
    with db.write() as conn:
        bulk.insert(conn, m, [message(f"j.{i}", experiments=v) for i, v in enumerate(values)])
    with db.read() as conn:
        query = select(m.c.wamid, cast(m.c.experiments, Text))
        texts: dict[str, str] = dict(conn.execute(query).all())
    assert [texts[f"j.{i}"] for i in range(len(values))] == ["1", "true", "0", "false", '"1"']


def test_a_taken_key_is_skipped_or_its_counters_added(db: Database) -> None:
    with db.write() as conn:
        bulk.insert(conn, m, ROWS[:2])
        bulk.insert(conn, m, [message("w.1", status="read"), ROWS[2]], conflict=("wamid",))
    found = stored(db)
    assert found["w.1"]["status"] == "sent" and "w.3" in found

    def counts(template: str, sent: int, failed: int) -> dict[str, Any]:
        zeros = {c.key: 0 for c in ds.c if c.key not in ("phone_number_id", "template")}
        return {**zeros, "phone_number_id": "*", "template": template, "bucket_start": T,
                "sent": sent, "failed": failed}  # fmt: skip

    keys, add = ("phone_number_id", "template", "bucket_start"), ("sent", "failed")
    with db.write() as conn:
        bulk.insert(conn, ds, [counts("a", 3, 1), counts("b", 1, 0)], conflict=keys, add=add)
        bulk.insert(conn, ds, [counts("a", 2, -1)], conflict=keys, add=add)
    totals = {k[0]: (row["sent"], row["failed"]) for k, row in stored(db, ds).items()}
    assert totals == {"a": (5, 0), "b": (1, 0)}


def test_insert_new_returns_what_it_inserted_and_leaves_taken_keys_alone(db: Database) -> None:
    e = schema.events

    def event(key: str, kind: str) -> dict[str, Any]:
        return {"dedupe_key": key, "raw_id": None, "source": "webhook", "field": "account_update",
                "kind": kind, "waba_id": "1", "subject_kind": None, "subject_id": None,
                "occurred_at": T, "received_at": T, "value": {"k": [1, None]}}  # fmt: skip

    keys = ("id", "dedupe_key")
    with db.write() as conn:
        assert bulk.insert_new(conn, e, [], key="dedupe_key", returning=keys) == []
        first = bulk.insert_new(conn, e, [event("a", "one"), event("b", "one")], key="dedupe_key",
                                returning=keys)  # fmt: skip
        again = [event("b", "two"), event("c", "two"), event("d", "two")]
        second = bulk.insert_new(conn, e, again, key="dedupe_key", returning=keys)
    with db.read() as conn:
        rows = {r.dedupe_key: r for r in conn.execute(select(e))}
    assert sorted(k for _, k in first) == ["a", "b"] and sorted(k for _, k in second) == ["c", "d"]
    assert {k: i for i, k in first + second} == {k: r.id for k, r in rows.items()}
    assert rows["b"].kind == "one"  # the taken key kept its row
    assert rows["d"].value == {"k": [1, None]} and rows["d"].occurred_at == T


def test_an_update_sets_the_other_columns_of_the_rows_it_matches(db: Database) -> None:
    later = (T + timedelta(hours=1)).astimezone(PLUS_FIVE)
    with db.write() as conn:
        bulk.insert(conn, m, ROWS)
        bulk.update(
            conn,
            m,
            [
                {"wamid": "w.1", "status": "read", "read_at": later, "experiments": None},
                {"wamid": "w.4", "status": "failed", "read_at": None, "experiments": [["x", 1]]},
                {"wamid": "w.none", "status": "read", "read_at": later, "experiments": None},
            ],
            by=("wamid",),
        )
    found = stored(db)
    assert (found["w.1"]["status"], found["w.1"]["read_at"]) == ("read", later)
    assert (found["w.4"]["status"], found["w.4"]["read_at"]) == ("failed", None)
    assert found["w.4"]["experiments"] == [["x", 1]]
    assert found["w.1"]["sent_at"] == T  # untouched columns stay
    assert found["w.2"]["status"] is None  # untouched rows stay
    assert "w.none" not in found


def test_rows_of_different_shapes_are_refused(db: Database) -> None:
    short = {k: v for k, v in message("w.9").items() if k != "body"}
    with pytest.raises(ValueError, match="same columns"), db.write() as conn:
        bulk.insert(conn, m, [message("w.8"), short])
    with pytest.raises(KeyError), db.write() as conn:
        bulk.insert(conn, m, [message("w.8"), {**short, "other": 1}])
    assert stored(db) == {}


def test_names_that_are_no_columns_are_refused(db: Database) -> None:
    refused: list[tuple[Any, list[dict[str, Any]], str]] = [
        (m, [{"wamid; DROP TABLE messages": 1}], "no column 'wamid; DROP TABLE messages'"),
        (schema.field_counts, [{"field": "messages"}], r"field_counts\.changes has a default"),
    ]
    for table, rows, reason in refused:
        with pytest.raises(ValueError, match=reason), db.write() as conn:
            bulk.insert(conn, table, rows)
    reason = "its key columns and at least one other"
    with pytest.raises(ValueError, match=reason), db.write() as conn:
        bulk.update(conn, m, [{"wamid": "w.1"}], by=("wamid",))


def test_a_naive_time_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="naive"), db.write() as conn:
        bulk.insert(conn, m, [message("w.1", at=datetime(2026, 1, 1))])


AWKWARD = ['a"b', "c\\d", "{e,f}", "NULL", " sp ", "", "é👋", "x'y", "(1,2)"]


def test_awkward_text_goes_through_bulk_writes_and_key_lookups(db: Database) -> None:
    """Text that an array's or a JSON text form must quote or escape comes back as it went."""
    rows = [message(f"k.{i}", phone_number_id="p", customer=v, at=T) for i, v in enumerate(AWKWARD)]
    with db.write() as conn:
        bulk.insert(conn, m, rows)
        bodies = [{"wamid": f"k.{i}", "body": v} for i, v in enumerate(AWKWARD)]
        bulk.update(conn, m, bodies, by=("wamid",))
    table = keys.KeyTable(db.dialect, (String(), String(), schema.UTCDateTime()))
    phone, customer, since = table.columns
    on = and_(m.c.phone_number_id == phone, m.c.customer == customer, m.c.at >= since)
    query = select(m.c.customer, m.c.body).select_from(table.table).join(m, on)
    with db.read() as conn:
        found = conn.execute(query, table.params([("p", v, T) for v in AWKWARD])).all()
    assert sorted(found) == sorted((v, v) for v in AWKWARD)
