"""Many followed calls share one budget of Evo Voice requests (EVOVOICE_REQUESTS_PER_MINUTE), read
many sessions a request, back off together on 429, and leave room for new calls.

End to end through the running bot. The budget's clock is the test's (`BudgetClock`): the bot's
requests are counted at the Evo Voice stand-in against the seconds the test let pass on it, never
against the wall clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from bot.evovoice.budget import RequestBudget
from bot.evovoice.lookups import BATCH_SIZE, MAX_BATCHES_IN_FLIGHT
from bot.standins.evovoice import EvoVoiceStandIn, RateLimit
from tests.budget_clock import BudgetClock
from tests.conftest import BotFactory, BotUnderTest
from tests.follow_helpers import FAST, end_session, services

# The tests that place dozens of calls in one channel at once are about Evo Voice's budget: under
# Slack's posting limit (a message a second) their parents and statuses would take minutes of
# Slack's time and most would go by response URL, so the limit is lifted for them.
FOLLOWED = 200
# Dozens of calls placed at once: on a busy machine the bot and the stand-in in one process took
# up to 2.9 s to answer some of the POSTs, past the suite's 2 s (tests/conftest.py), and a call
# whose answer is lost is looked for rather than followed (other tests' business). The bot's
# default wait for an answer (EVOVOICE_TIMEOUT), then.
MANY_AT_ONCE = {**FAST, "EVOVOICE_TIMEOUT": "15"}


def number(i: int) -> str:
    return f"+1814404{3000 + i:04d}"


def polls(evo: EvoVoiceStandIn) -> int:
    """Requests that read sessions: listings of specific ids, and single sessions."""
    return sum(
        1 for r in evo.requests
        if r.method == "GET" and (r.path.startswith("/sessions/") or "specificIds" in r.query)
    )


def budget_of(bot: BotUnderTest, clock: BudgetClock) -> RequestBudget:
    budget = services(bot).evo.budget
    budget.clock = clock
    budget.sleep = clock.sleep
    return budget


async def place(bot: BotUnderTest, count: int) -> list[str]:
    """Place `count` calls with /call (25 at a time); their session ids, once all are followed."""
    for start in range(0, count, 25):
        await asyncio.gather(*(
            bot.command(f"{number(i)} escalation") for i in range(start, min(count, start + 25))
        ))
    await bot.evo.wait_for_posts(count, timeout=120)
    await bot.settle()
    assert services(bot).follower.following == count
    return list(bot.evo.sessions)


def ended_statuses(bot: BotUnderTest) -> set[str]:
    """The status messages edited to say their call ended."""
    return {
        str(c.params.get("ts")) for c in bot.slack.calls_to("chat.update")
        if "Ended" in str(c.params.get("text")) and c.ok
    }


async def run_clock(bot: BotUnderTest, clock: BudgetClock, done: Callable[[], bool]) -> int:
    """Move the budget's clock a second at a time until `done()`; how many seconds it moved.

    After each second the bot gets the chance to spend what it earned (until a request reaches the
    stand-in, or a short while), so no more seconds pass than the work needs. A wait longer than a
    second (a pause for Retry-After) is leapt over at once: the bot sends nothing until it ends, and
    a second at a time it would cost that short while per second of the pause (a 429 answered
    while the test moved the clock can start a fresh minute's pause).
    """
    seconds = 0
    async with asyncio.timeout(180):
        while not done():
            seen = len(bot.evo.requests)
            wake = clock.next_wake()
            step = max(1, math.ceil(wake - clock()) if wake is not None else 1)
            clock.advance(step)
            seconds += step
            for _ in range(100):
                if len(bot.evo.requests) > seen or done():
                    break
                await asyncio.sleep(0.005)
    return seconds


async def test_two_hundred_followed_calls_stay_within_the_budget_and_a_new_call_goes_first(
    bot_factory: BotFactory,
) -> None:
    # 60 a minute: a token a second, 5 at once.
    bot = await bot_factory("http", **MANY_AT_ONCE, EVOVOICE_REQUESTS_PER_MINUTE="60")
    bot.slack.posting_rate = None  # Slack's posting limit lifted: see above FOLLOWED
    clock = BudgetClock()
    budget = budget_of(bot, clock)
    sessions = await place(bot, FOLLOWED)
    # The clock has not moved: the 200 POSTs went at once, the polls got the burst at most.
    assert polls(bot.evo) <= budget.burst
    async with asyncio.timeout(10):
        while not budget.waiting:
            await asyncio.sleep(0.01)
    queued_polls = polls(bot.evo)

    # The budget is spent and polls wait their turn: a new call is placed all the same, first.
    await bot.command(f"{number(FOLLOWED)} escalation")
    await bot.evo.wait_for_posts(FOLLOWED + 1)
    await bot.settle()
    assert polls(bot.evo) == queued_polls and budget.waiting

    everyone = list(bot.evo.sessions)
    for session_id in everyone:
        end_session(bot, session_id, after_seconds=30, outcome="Completed")
    seconds = await run_clock(bot, clock, lambda: len(ended_statuses(bot)) == FOLLOWED + 1)

    read = polls(bot.evo)
    print(f"\n{FOLLOWED + 1} followed calls: {read} session reads in {seconds} s of the budget's "
          f"clock (budget 60/min, burst {budget.burst:.0f})")
    assert read <= budget.burst + seconds  # never above 60 a minute
    assert read < len(everyone) / 2  # many sessions a request
    assert all(bot.evo.reads_of(s) for s in sessions)
    assert len(ended_statuses(bot)) == FOLLOWED + 1  # every requester sees the outcome


async def test_a_429_storm_backs_every_poller_off_together(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **MANY_AT_ONCE, EVOVOICE_REQUESTS_PER_MINUTE="6000")
    bot.slack.posting_rate = None  # Slack's posting limit lifted: see above FOLLOWED
    clock = BudgetClock()
    budget = budget_of(bot, clock)
    sessions = await place(bot, 60)
    async with asyncio.timeout(30):
        while not all(bot.evo.reads_of(s) for s in sessions):
            await asyncio.sleep(0.01)

    # Evo Voice now takes one request a minute and refuses the rest, asking to wait for the
    # minute's end (its Retry-After counts down to it, however late an answer arrives).
    bot.evo.rate_limit = storm = RateLimit(requests=1, seconds=60, clock=clock)
    async with asyncio.timeout(10):
        while not budget.paused:
            await asyncio.sleep(0.005)
    for session_id in sessions:
        end_session(bot, session_id, after_seconds=12, outcome="Completed")
    clock.advance(59)
    await asyncio.sleep(0.3)  # a chance to misbehave; nothing may be sent while paused
    assert budget.paused and budget.waiting
    # Only the batches already on their way met the storm, not each followed call.
    assert 1 <= storm.refused <= MAX_BATCHES_IN_FLIGHT
    assert len(ended_statuses(bot)) == 0

    bot.evo.rate_limit = None  # the storm is over
    await run_clock(bot, clock, lambda: len(ended_statuses(bot)) == len(sessions))
    assert storm.refused <= MAX_BATCHES_IN_FLIGHT


async def test_a_server_ignoring_specific_ids_is_noticed_and_every_outcome_still_arrives(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **MANY_AT_ONCE, EVOVOICE_REQUESTS_PER_MINUTE="6000")
    bot.evo.specific_ids = "ignored"
    for _ in range(BATCH_SIZE + 5):  # the account's other calls, which such a listing shows too
        bot.evo.add_session(callState="Connected", toAddress="+18145550199")
    others = set(bot.evo.sessions)
    await place(bot, 10)
    ours = [s for s in bot.evo.sessions if s not in others]
    async with asyncio.timeout(30):
        while not all(bot.evo.requests_to("GET", f"/sessions/{s}") for s in ours):
            await asyncio.sleep(0.01)
    assert not services(bot).evo.polls.batching
    assert any("specificIds" in r.query for r in bot.evo.requests)  # it was tried first

    for i, session_id in enumerate(ours):
        end_session(bot, session_id, after_seconds=5, outcome=f"Outcome {i}")
    async with asyncio.timeout(60):
        while len(ended_statuses(bot)) < len(ours):
            await asyncio.sleep(0.01)
    texts = [str(c.params.get("text")) for c in bot.slack.calls_to("chat.update")]
    for i in range(len(ours)):
        assert sum(f"Outcome {i}" in t for t in texts if "Ended" in t) >= 1
    assert all(not bot.evo.sessions[s].get("ended") for s in others)
