"""Rows written together before a call is dialled, in one round trip: a rate-limit slot first,
then new rows that may each take the id of one written before it (the attempt's audit record, the
call's row with the record's id, the row's lease with the row's id).

The rows are data, their column values computed once in Python for both databases (`NewRow`):
- SQLite runs them as statements in one atomic unit (one `BEGIN IMMEDIATE` transaction, one trip to
  the database thread): the slot's own statements, then one INSERT per row.
- PostgreSQL runs them as one call of `callbot_write_together` (migration 11), a single statement
  and so its own transaction: it takes the slot with `callbot_rate_slot` (migration 10, whose locks
  it holds until that statement's end) and inserts the rows from jsonb, one static INSERT per
  table it knows (audit_attempts, calls, leases), naming no column: each row comes whole. Until
  migration 11 the same writes were a transaction of six round trips, each on a pooled connection
  held while a busy event loop came back to it.

Either way the slot and every row are written together or not at all: a refused slot writes no row,
and a row refused (a constraint, a lease held already) takes the slot and the rows before it away.
A request whose claim keeps a note for its requester (`untold`, bot/storage/claims.py) has it
cleared in the same write, and nothing is written if it is gone (`AlreadyTold`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bot.storage.claims import Untold, told_in
from bot.storage.database import POSTGRESQL, Connection, Database, Row

S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)

# What a slot's taking answers, on either database: (the scope that refused it, when the attempt it
# waits for was made, None) or (None, None, the new slot's id). See bot/storage/rate_slot.py.
SlotAnswer = tuple[str | None, float | None, int | None]
# What callbot_write_together answers for a request's note that is gone (bot/storage/rate_slot.py).
TOLD = "told"


@dataclass(frozen=True)
class NewRow:
    """One row to insert: `values` by column, every column but a generated id (PostgreSQL leaves
    one not given NULL, not its default); `ids` names, for a column, the table of a row written
    before it in the same write whose id it takes."""

    table: str
    values: Mapping[str, Any]
    ids: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        # Booleans as the 0/1 both databases store (jsonb would not read `false` as an integer).
        values = {k: int(v) if isinstance(v, bool) else v for k, v in self.values.items()}
        return {"table": self.table, "values": values, "ids": dict(self.ids)}


class AlreadyTold(Exception):
    """The request's note was taken by a take-over round, which told its requester the call was
    not placed (this replica stalled past its lease meanwhile): nothing was written."""


class SlotFirst(Protocol[S_co]):
    """A rate-limit slot taken first, in the same transaction (bot/calls/limits.py)."""

    def arguments(self) -> Sequence[Any]:
        """`callbot_rate_slot`'s arguments, in order (PostgreSQL)."""

    async def take_in(self, conn: Connection) -> SlotAnswer:
        """The same check as statements on `conn` (SQLite, inside the write's transaction)."""

    def decide(self, answer: SlotAnswer) -> S_co:
        """The slot taken, or the refusal raised."""


async def write_together(
    db: Database, rows: Sequence[NewRow], slot: SlotFirst[S] | None = None,
    untold: Untold | None = None,
) -> tuple[S | None, dict[str, Row]]:
    """Take `slot`, then insert `rows` in order, all in one transaction and one round trip; what
    `slot.decide` raises comes out, with nothing written. The slot and each table's new row.
    `untold`: cleared in the same transaction; AlreadyTold, with nothing written, if it is gone."""
    if db.dialect == POSTGRESQL:
        return await _in_one_statement(db, rows, slot, untold)

    async def unit(conn: Connection) -> tuple[S | None, dict[str, Row]]:
        if untold is not None and not await told_in(conn, untold):
            raise AlreadyTold()  # the slot refused after it: the note is there again (rollback)
        taken = slot.decide(await slot.take_in(conn)) if slot is not None else None
        return taken, await insert_rows(conn, rows)

    return await db.atomic(unit)


async def insert_rows(conn: Connection, rows: Sequence[NewRow]) -> dict[str, Row]:
    """`rows` in order on `conn`; what the PostgreSQL function does, as statements."""
    inserted: dict[str, Row] = {}
    for row in rows:
        values = dict(row.values) | {
            column: inserted[table]["id"] for column, table in row.ids.items()
        }
        names = list(values)
        written = await conn.fetchone(
            f"INSERT INTO {row.table} ({', '.join(names)})"
            f" VALUES ({', '.join('?' * len(names))}) RETURNING *",
            [values[name] for name in names],
        )
        assert written is not None
        inserted[row.table] = written
    return inserted


async def _in_one_statement(
    db: Database, rows: Sequence[NewRow], slot: SlotFirst[S] | None, untold: Untold | None
) -> tuple[S | None, dict[str, Row]]:
    arguments: tuple[Any, ...] = (
        json.dumps(list(slot.arguments())) if slot is not None else None,
        json.dumps([row.as_json() for row in rows]))
    if untold is not None:  # its overload (migration 18): the note first, cleared with the rows
        arguments += (untold.key, untold.note)
    found = await db.fetchone(
        "SELECT refused_by, refused_at, slot_id, inserted FROM callbot_write_together("
        f"{', '.join('?' * len(arguments))})", arguments)
    assert found is not None
    if found["refused_by"] == TOLD:
        raise AlreadyTold()
    answer: SlotAnswer = (found["refused_by"], found["refused_at"], found["slot_id"])
    taken = slot.decide(answer) if slot is not None else None
    written: list[dict[str, Any]] = json.loads(found["inserted"])
    return taken, {row.table: values for row, values in zip(rows, written, strict=True)}
