"""Acks go first (bot/tasks.py): work started by a Slack request waits while requests are being
answered, at most `max_wait`; a lone request's work starts once its own answer is out."""

from __future__ import annotations

import asyncio

import pytest

from bot.tasks import AcksFirst, BackgroundTasks
from tests.conftest import BotUnderTest

FULL = "+18144043093"


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_work_waits_until_every_request_being_answered_is_answered() -> None:
    tasks = BackgroundTasks(AcksFirst(max_wait=60))
    started: list[str] = []

    async def work(name: str) -> None:
        started.append(name)

    tasks.acks.entered()
    tasks.acks.entered()
    tasks.spawn(work("first"), name="first")
    await turns()
    assert started == [] and tasks.pending == 1
    tasks.acks.left()
    await turns()
    assert started == []  # one request still waits for its ack
    tasks.acks.left()
    await turns()
    assert started == ["first"]
    tasks.spawn(work("lone"), name="lone")  # nothing being answered: starts at once
    await turns()
    assert started == ["first", "lone"]
    await tasks.wait_idle()


async def test_work_its_own_request_waits_on_starts_at_once() -> None:
    tasks = BackgroundTasks(AcksFirst(max_wait=60))
    started: list[str] = []

    async def work(name: str) -> None:
        started.append(name)

    tasks.acks.entered()  # the request, waiting on what its work says first
    tasks.spawn(work("answers the ack"), name="answers", after_acks=False)
    tasks.spawn(work("after the ack"), name="after")
    await turns()
    assert started == ["answers the ack"]
    tasks.acks.left()
    await turns()
    assert started == ["answers the ack", "after the ack"]


async def test_a_steady_stream_of_requests_holds_work_back_no_longer_than_max_wait() -> None:
    tasks = BackgroundTasks(AcksFirst(max_wait=0.01))
    started = asyncio.Event()

    async def work() -> None:
        started.set()

    tasks.acks.entered()  # never answered
    tasks.spawn(work(), name="work")
    await asyncio.wait_for(started.wait(), 5)
    assert tasks.acks.count == 1


async def test_by_default_a_call_is_held_back_a_fraction_of_a_second_at_most() -> None:
    # A page's dialling waits for the acks being sent, never long: an ack that never ends (or a
    # stream of them) holds it back a quarter of a second.
    tasks = BackgroundTasks()
    started = asyncio.Event()

    async def work() -> None:
        started.set()

    tasks.acks.entered()  # never answered
    tasks.spawn(work(), name="work")
    await asyncio.wait_for(started.wait(), 1.0)


async def test_work_that_fails_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = BackgroundTasks()

    async def work() -> None:
        raise RuntimeError("a bug")

    tasks.spawn(work(), name="call by U0MANAGER")
    await tasks.wait_idle()
    await turns()
    [logged] = [r for r in caplog.records if r.name == "bot.tasks"]
    assert logged.levelname == "ERROR"
    assert logged.getMessage() == "background task call by U0MANAGER failed"
    assert logged.exc_info is not None and "a bug" in str(logged.exc_info[1])


async def test_work_cancelled_while_it_waits_never_runs() -> None:
    tasks = BackgroundTasks(AcksFirst(max_wait=60))
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)

    tasks.acks.entered()
    task = tasks.spawn(work(), name="work")
    await turns()
    await tasks.drain(timeout=0)
    assert task.cancelled() and ran == []


async def test_a_call_waits_for_the_acks_being_sent_then_dials(bot: BotUnderTest) -> None:
    assert bot.runtime.services is not None
    acks = bot.runtime.services.tasks.acks
    acks.max_wait = 60
    counted: list[int] = []
    count_in = acks.entered

    def entered() -> None:  # a spy on the handler's count, nothing replaced
        count_in()
        counted.append(acks.count)

    acks.entered = entered  # type: ignore[method-assign]
    acks.entered()  # another request, still being answered
    ack, _ = await bot.command(f"{FULL} escalation")
    assert ack.status == 200
    assert counted == [1, 2]  # the /call was counted in while it was answered...
    assert acks.count == 1  # ...and out once it was
    # Its work waits for the other ack (ungated, it would be done well within this).
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(bot.settle()), 0.5)
    assert bot.evo.outgoing_posts == []
    acks.left()
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json["numberToDial"] == FULL


async def test_once_draining_no_new_work_starts() -> None:
    """SIGTERM's drain: work that would start after it (a request answered just before) is
    refused, never run, so nothing is dialled once the bot is stopping."""
    tasks = BackgroundTasks(AcksFirst(max_wait=60))
    started: list[str] = []

    async def work(name: str) -> None:
        started.append(name)

    await tasks.drain(timeout=1)
    with pytest.raises(RuntimeError, match="shutting down"):
        tasks.spawn(work("late"), name="late")
    await turns()
    assert started == [] and tasks.pending == 0
