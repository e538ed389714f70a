"""An escalation step refused with "not now" (429, Evo Voice unreachable) is dialled again within
its deadline instead of being marked failed at once; refusals that won't change move on."""

from __future__ import annotations

import asyncio
import logging

import pytest
from yarl import URL

from bot.calls.retry import FIRST_RETRY_SECONDS
from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import Acted, DropConnection, ErrorStatus, Respond, TooManyRequests
from tests.budget_clock import LeapingClock
from tests.conftest import QUICK_VOICE_RETRY, BotFactory, until
from tests.escalations import (
    ALICE,
    BOB,
    ROSTER,
    HeldPauses,
    click_ack,
    click_stop,
    dialled,
    escalation_message,
    leaping_budget,
    open_on_message,
    retries_on,
    running_escalation,
    start,
    state_of,
    submit,
    wait_for_edit,
    wait_for_state,
)
from tests.follow_helpers import audit_records, services

OUTGOING = ("POST", "/sessions/outgoing")


async def test_a_rate_limited_step_is_dialled_again_until_it_rings(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    retries_on(bot, clock)
    bot.evo.queue_outgoing(*[TooManyRequests(retry_after="0.05")] * 3)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(4)
    await wait_for_edit(bot, escalation, "<@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    assert dialled(bot) == [ALICE] * 4  # three 429s, then the call that rang
    assert len(bot.evo.sessions) == 1
    assert await state_of(bot) == EscalationState.RUNNING  # on Alice's step, her phone ringing


async def test_429s_past_the_steps_deadline_move_on_to_the_next_person(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    pauses = HeldPauses(bot)
    bot.evo.default_behaviours[OUTGOING] = TooManyRequests(retry_after="0.05")
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await pauses.until_held(1)
    pauses.release()
    await pauses.until_held(2)  # refused twice, waiting to dial her a third time
    assert dialled(bot) == [ALICE, ALICE]  # still on Alice's step
    bot.evo.default_behaviours[OUTGOING] = Respond()
    clock.advance(91)  # Alice's step ran out while Evo Voice kept saying "not now"
    pauses.release()
    await bot.evo.wait_for_posts(3)
    assert dialled(bot)[-1] == BOB
    assert {s.get("toAddress") for s in bot.evo.sessions.values()} == {BOB}


async def test_while_the_next_person_s_call_is_refused_not_now_the_card_says_how_the_last_step_went(
    bot_factory: BotFactory,
) -> None:
    """Alice's step ends at her deadline; Evo Voice then says "not now" to Bob's call for a
    while. Meanwhile the card shows her step over, not her phone still ringing."""
    bot, clock, escalation = await running_escalation(bot_factory)
    pauses = HeldPauses(bot)
    bot.evo.default_behaviours[OUTGOING] = TooManyRequests(retry_after="0.05")
    clock.advance(91)
    await pauses.until_held()  # Bob's call refused, the step waiting to dial him again
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after "
                                         "90 s (hung up)")
    assert {s.get("toAddress") for s in bot.evo.sessions.values()} == {ALICE}
    bot.evo.default_behaviours[OUTGOING] = Respond()
    pauses.release()
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")


@pytest.mark.parametrize("answer", [Acted(ErrorStatus(500)), DropConnection()])
async def test_a_step_whose_call_may_have_been_placed_is_never_dialled_again(
    bot_factory: BotFactory, answer: Acted | DropConnection
) -> None:
    # "answered 5xx" or the answer lost after sending: the call may be ringing already, so the
    # step's retries ("not now") must not cover it (docs/evovoice-api.md, Retrying safely).
    bot, _ = await start(bot_factory)
    bot.evo.queue_outgoing(answer)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "<@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    await bot.settle()
    assert dialled(bot) == [ALICE]  # once: her phone is ringing from the first POST
    assert len(bot.evo.sessions) == 1


async def test_a_retry_after_longer_than_the_step_has_left_is_not_waited_for(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        if not pauses:
            clock.advance(80)  # the first pause leaves Alice's step 10 s of its 90
        pauses.append(seconds)

    services(bot).calls.dialler.sleep = pause
    leaping_budget(bot)  # Bob's call waits out the 30 s, as every request does
    bot.evo.queue_outgoing(TooManyRequests(retry_after="0.05"), TooManyRequests(retry_after="30"))
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await bot.evo.wait_for_posts(3)
    await bot.settle()
    # Waiting would pass the step's deadline (a Retry-After of up to 60 s): the step ends, and
    # Bob is called next, rather than Alice a third time after her step should have ended.
    assert pauses == [FIRST_RETRY_SECONDS]  # a Retry-After shorter than the back-off's first
    assert dialled(bot) == [ALICE, ALICE, BOB]


async def test_a_refused_login_still_moves_on_at_once(bot_factory: BotFactory) -> None:
    bot, _ = await start(bot_factory)
    bot.evo.password = "changed while the bot ran"  # Basic and /auth/credentials both refused
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]  # no second try for Alice: a 401 won't change


async def test_evo_voice_unreachable_for_a_moment_is_tried_again(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.calls.service")
    bot, _ = await start(bot_factory, **QUICK_VOICE_RETRY)
    # The step's pause before dialling again is held until Evo Voice is back.
    pauses: list[float] = []
    pausing, back = asyncio.Event(), asyncio.Event()

    async def held(seconds: float) -> None:
        pauses.append(seconds)
        pausing.set()
        await back.wait()

    services(bot).calls.dialler.sleep = held
    port = URL(bot.evo.url).port
    assert port is not None
    await bot.evo.stop(keep_port=True)  # connections refused: the client's own three tries fail
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await asyncio.wait_for(pausing.wait(), 30)
    assert pauses == [FIRST_RETRY_SECONDS]  # no Retry-After: the first pause of the back-off
    await bot.evo.start(port=port)
    back.set()
    await bot.evo.wait_for_posts(1, timeout=30)
    assert dialled(bot) == [ALICE]
    assert any("EvoVoiceUnreachable, trying again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("button", ["stop", "ack"])
async def test_stop_or_i_m_on_it_while_evo_voice_says_not_now_rings_nobody(
    bot_factory: BotFactory, button: str
) -> None:
    """Alice's call is refused with a 429, and the step waits to dial her again. Stop escalation
    (or I'm on it) is clicked meanwhile: when the wait is over she is not rung; the chain ends as
    the click said, and her attempt was called off, not failed."""
    bot, _ = await start(bot_factory)
    pausing, back = asyncio.Event(), asyncio.Event()

    async def held(_: float) -> None:
        pausing.set()
        await back.wait()

    services(bot).calls.dialler.sleep = held
    bot.evo.queue_outgoing(TooManyRequests(retry_after="0.05"))
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await asyncio.wait_for(pausing.wait(), 10)
    if button == "stop":
        await click_stop(bot, escalation, user_id="U0ADMIN")
    else:
        await click_ack(bot, escalation, user_id="U0BOB")
    await wait_for_state(bot, EscalationState.STOPPING if button == "stop"
                         else EscalationState.ACKNOWLEDGING)
    back.set()
    await wait_for_state(bot, EscalationState.STOPPED if button == "stop"
                         else EscalationState.ACKNOWLEDGED)
    await bot.settle()
    assert dialled(bot) == [ALICE]  # the one refused with a 429: no call was placed after it
    assert bot.evo.sessions == {}
    [attempt] = [r for r in await audit_records(bot) if r.number_masked == "+1 814 ••• 3093"]
    assert attempt.result is not None
    assert (attempt.result.kind, attempt.result.reason) == ("called_off", "ChainNotRunning")


@pytest.mark.parametrize("button", ["stop", "ack"])
async def test_stop_or_i_m_on_it_while_the_next_call_waits_out_evo_voice_s_pause_rings_nobody(
    bot_factory: BotFactory, button: str
) -> None:
    """Bob's call is recorded and on its way when every request to Evo Voice must wait (a 429 to
    any of them asked for 30 s): his POST waits its turn. Stop escalation (or I'm on it) is clicked
    meanwhile (the card says it is stopped): when the pause ends, Bob is not rung."""
    bot, clock = await start(bot_factory, policy=ROSTER.replace('U0BOB = "+18144043094"\n', ""))
    bot.slack.users["U0BOB"] = {"profile": {"phone": BOB}}
    budget, budget_clock = services(bot).evo.budget, LeapingClock()
    pausing, pause_over = asyncio.Event(), asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds >= 30:  # the pause Evo Voice asked for: held until the test ends it
            pausing.set()
            await pause_over.wait()
        await budget_clock.sleep(seconds)

    budget.clock, budget.sleep = budget_clock, sleep
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    services(bot).oncall.phones.forget()  # read when the form showed who comes next
    profile = bot.slack.hold("users.info", when=lambda c: c.params.get("user") == "U0BOB")
    clock.advance(91)
    await profile.wait_until_held()  # Bob's step: Alice's call is hung up, his number read
    budget.back_off(30)  # as a 429 to a poll does
    profile.open()
    await asyncio.wait_for(pausing.wait(), 10)

    async def bobs_call_recorded() -> bool:
        [row] = await services(bot).db.fetchall("SELECT step, step_call_id FROM escalations")
        return row["step"] == 1 and row["step_call_id"] is not None

    while not await bobs_call_recorded():
        await asyncio.sleep(0.01)
    if button == "stop":
        await click_stop(bot, escalation, user_id="U0ADMIN")
        await wait_for_edit(bot, escalation, "stopped by <@U0ADMIN>")
    else:
        await click_ack(bot, escalation, user_id="U0ADMIN")
        await wait_for_state(bot, EscalationState.ACKNOWLEDGING)
    pause_over.set()
    await wait_for_state(bot, EscalationState.STOPPED if button == "stop"
                         else EscalationState.ACKNOWLEDGED)
    await bot.settle()
    assert dialled(bot) == [ALICE]  # nobody rung after the card said it was over
    [attempt] = [r for r in await audit_records(bot) if r.number_masked == "+1 814 ••• 3094"]
    assert attempt.result is not None
    assert (attempt.result.kind, attempt.result.reason) == ("called_off", "ChainNotRunning")


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
async def test_a_retry_after_of_no_time_is_no_hot_loop(
    bot_factory: BotFactory, retry_after: str
) -> None:
    """`Retry-After: 0`, or a date already past (a server's clock behind ours), says "not now"
    without saying for how long: the step still pauses as after a 429 without one, so Alice's
    step is dialled a few times over its 90 s, not dozens of times a second, before Bob's."""
    bot, clock = await start(bot_factory)
    pauses = retries_on(bot, clock)
    bot.evo.queue_outgoing(*[TooManyRequests(retry_after=retry_after)] * 50)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await until(lambda: BOB in dialled(bot) or bool(bot.evo.sessions), timeout=10)
    assert min(pauses) >= FIRST_RETRY_SECONDS
    assert 1 < dialled(bot).count(ALICE) <= 10  # 1 s, 2 s, 4 s… up to 15 s within 90 s
    assert not bot.evo.sessions  # nobody rung: every POST was refused


async def test_a_step_dialled_after_a_restart_past_its_first_deadline_is_tried_again_on_a_429(
    bot_factory: BotFactory,
) -> None:
    """Bob's step begins, and the bot dies while it checks (Slack slow to list the requester's
    group) before dialling him. The next start comes after the deadline written when his step
    began, and dials him (his call never left). Evo Voice says "not now": he is dialled again
    within his step's time, counted from his call, as in a step that never met a restart, not
    marked "couldn't be called" and passed over."""
    policy = ROSTER + 'responders = ["S0ONCALL"]\n'
    first, clock = await start(bot_factory, policy=policy)
    first.slack.usergroups["S0ONCALL"] = ["U0SRE"]
    view, _ = await open_on_message(first, user_id="U0SRE")
    assert await submit(first, view, user_id="U0SRE") == {}
    escalation = await escalation_message(first)
    await wait_for_edit(first, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    services(first).access.forget_groups()
    held = first.slack.hold("usergroups.users.list")
    clock.advance(91)  # Alice's step ends; Bob's begins, and his checks wait on Slack
    await held.wait_until_held()
    await first.runtime.stop(grace=0)  # the bot dies there
    held.open()

    clock.advance(200)  # the next start comes after the deadline Bob's step began with
    first.evo.queue_outgoing(TooManyRequests(retry_after="0.05"))
    second, _ = await start(bot_factory, policy=policy, clock=clock)
    retries_on(second, clock)
    await second.evo.wait_for_posts(3)
    assert dialled(second) == [ALICE, BOB, BOB]  # refused "not now" once, then rang
    await wait_for_edit(second, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")


@pytest.mark.parametrize("failure", [ErrorStatus(503, "Service Unavailable"),
                                     TooManyRequests(retry_after="0.05")],
                         ids=["503", "429"])
async def test_a_flow_list_evo_voice_cant_give_now_doesnt_stop_the_page(
    bot_factory: BotFactory, failure: ErrorStatus | TooManyRequests,
) -> None:
    """The flow list, read an hour and more ago, is read afresh at the escalation's checks; Evo
    Voice failing to give it now says nothing of the flow having changed: the one read before
    serves, and Alice is rung, rather than every step failing its checks at once."""
    bot, _ = await start(bot_factory, **QUICK_VOICE_RETRY)  # the GET's one more try, at once
    view, _ = await open_on_message(bot)  # the form reads the flows
    catalog = services(bot).catalog
    later = catalog.clock() + 2 * 3600
    catalog.clock = lambda: later
    bot.evo.default_behaviours[("GET", "/flows")] = failure
    assert await submit(bot, view) == {}
    await bot.evo.wait_for_posts(1)
    assert dialled(bot) == [ALICE]
