"""A lease keeper's round that meets a task giving its own lease back takes it for one that
another replica took over, cancels it, and the work handed to it meanwhile is done by nobody.
The row runner alone, with leases whose give-back answers when the test says."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bot.runner import RowRunner
from tests.conftest import until


class SlowToAnswerLeases:
    """The leases of one replica; a give-back is done in the database at once, but its answer
    reaches the bot only when `answer` is set (a slow database, a busy machine)."""

    def __init__(self) -> None:
        self.mine: set[int] = set()
        self.answer = asyncio.Event()
        self.answering = asyncio.Event()

    async def take(self, kind: str, row_id: int, **_: Any) -> bool:
        self.mine.add(row_id)
        return True

    async def holds(self, kind: str, row_id: int) -> bool:
        return row_id in self.mine

    async def held(self, kind: str) -> set[int]:
        return set(self.mine)

    async def release(self, kind: str, row_id: int | None = None) -> None:
        if row_id is None:
            self.mine.clear()
            return
        self.mine.discard(row_id)
        self.answering.set()
        await self.answer.wait()

    async def unowned(self, kind: str, row_ids: list[int]) -> list[int]:
        return [i for i in row_ids if i not in self.mine]

    async def lapse(self, kind: str, row_id: int) -> None:
        self.mine.discard(row_id)


async def test_a_keeper_round_during_a_give_back_leaves_the_work_handed_over_to_be_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An escalation's chain ends and gives its lease back just as Stop is clicked: the stop is
    # handed to the ending task (start_or_after), which takes the lease again and runs it. A
    # keeper round in that moment saw the task running and its lease not held, took it for
    # one another replica had taken over, and cancelled it: the stop was never shown.
    leases = SlowToAnswerLeases()

    async def failed(row_id: int, exc: Exception) -> None:
        raise AssertionError(f"work for {row_id} failed: {exc!r}")

    runner = RowRunner("escalation", leases, on_error=failed)  # type: ignore[arg-type]
    done: list[str] = []

    async def chain() -> None:
        done.append("chain")

    async def stop() -> None:
        done.append("stop")

    assert await runner.start(7, chain)
    await asyncio.wait_for(leases.answering.wait(), 5)  # the chain is over, its lease given back
    assert await runner.start_or_after(7, stop)  # handed to the task that is ending
    caplog.set_level(logging.WARNING, logger="bot.runner")
    assert await runner.take_over(_nothing, _no_work) == []  # a keeper round meanwhile
    leases.answer.set()
    await until(lambda: 7 not in runner)
    assert done == ["chain", "stop"]
    assert "taken over by another replica" not in caplog.text
    await runner.stop()


async def _nothing() -> list[int]:
    return []


def _no_work(row_id: int) -> Any:
    raise AssertionError(f"no row is left behind by another replica here ({row_id})")
