"""A 409 to POST /sessions/outgoing: a refusal, or a call that rings all the same?

The evidence lists 409 "conflict" among ServiceStack's statuses and nothing more
(docs/evovoice-api.md, Errors). ServiceStack answers 409 for an optimistic-concurrency conflict on
a save, which a service may meet after it created the session: nothing rules out a call ringing
after a 409. So both are tried, as the stand-in can answer them: a 409 with no session created
(``ErrorStatus(409)``), and one for a call placed and ringing (``Acted(ErrorStatus(409))``). Either
way the bot dials once, looks for the call as after an ambiguous failure, follows one it finds,
and never says "nothing was dialled", which it can't know.
"""

from __future__ import annotations

from bot.standins.evovoice import Acted, ErrorStatus
from tests.conftest import BotFactory, BotUnderTest
from tests.escalations import (
    ALICE,
    BOB,
    dialled,
    escalation_message,
    hung_up,
    open_on_message,
    page_of,
    session_of,
    start,
    submit,
)
from tests.escalations import wait_for_edit as wait_for_card
from tests.follow_helpers import (
    FAST,
    FULL,
    audit_records,
    looked_for_long_enough,
    poll_now,
    status_message,
    wait_for_edit,
)

CONFLICT = ErrorStatus(409, "The session was changed by another request.",
                       "OptimisticConcurrencyException")
TOLD = ("⚠️ Outcome unknown: Evo Voice refused the call with a conflict (HTTP 409: The session was "
        "changed by another request), an answer it may give after placing the call, so the call "
        "may or may not have been placed. I did not retry, to avoid ringing twice. Check the call "
        "log in Evo Voice before calling again.")


def lookups_by_number(bot: BotUnderTest) -> int:
    return len([r for r in bot.evo.requests_to("GET", "/sessions")
                if "to" in r.query])


async def test_a_409_that_placed_nothing_is_looked_for_and_told_as_unclear_never_as_refused(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(CONFLICT)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    first = str(status.versions[0]["text"])
    assert first.startswith(TOLD), first
    assert "nothing was dialled" not in first.casefold()
    assert lookups_by_number(bot) >= 1  # looked for at once, as after a lost answer
    await looked_for_long_enough(bot)
    await wait_for_edit(bot, status, "most likely not placed")
    assert TOLD in str(status.text) and "nothing was dialled" not in str(status.text).casefold()
    assert len(bot.evo.outgoing_posts) == 1 and not bot.evo.sessions
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["unknown", "not_found"]


async def test_a_409_for_a_call_that_rings_is_found_followed_and_never_dialled_again(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(Acted(CONFLICT))  # the session saved, then the conflict
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    first = str(status.versions[0]["text"])
    assert first.startswith(TOLD) and session_id in first, first
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")
    assert len(bot.evo.outgoing_posts) == 1
    [record] = await audit_records(bot)
    assert record.session_id == session_id


async def test_an_escalation_step_answered_409_for_a_ringing_call_waits_its_deadline(
    bot_factory: BotFactory,
) -> None:
    # Alice's phone rings after the 409: Bob is not rung over it, nor Alice again, and the chain
    # goes on at her deadline, her call hung up first.
    bot, clock = await start(bot_factory)
    bot.evo.queue_outgoing(Acted(CONFLICT))
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await wait_for_card(bot, escalation, "<@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    await page_of(bot, "U0ALICE")  # paged once her call's result is in: her deadline set
    await bot.settle()
    assert dialled(bot) == [ALICE]
    alice = session_of(bot, ALICE)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    assert hung_up(bot, alice)


async def test_an_escalation_step_answered_409_with_no_call_moves_on_at_its_deadline(
    bot_factory: BotFactory,
) -> None:
    # Nothing rings, which the bot can't know at once: the step waits for her call as after a
    # lost answer, then the chain goes on to Bob; Alice is dialled once.
    bot, clock = await start(bot_factory)
    bot.evo.queue_outgoing(CONFLICT)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await page_of(bot, "U0ALICE")  # paged once her call's result is in: her deadline set
    await bot.settle()
    assert dialled(bot) == [ALICE]  # not Bob at once: her call may ring
    assert "couldn't be called" not in str(escalation.text)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_card(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
