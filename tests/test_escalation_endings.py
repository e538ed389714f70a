"""How an escalation's end reads on the card and in the audit trail when it ends on someone
other than the person whose phone rings now (escalation_endings): the hang-up that failed is
said on that person's line, and the acknowledgement is recorded on the acknowledger's own call.

It also covers what the channel hears when an acknowledgement or Stop races the "Nobody
acknowledged" broadcast: the escalation's state decides how it ended, and only that end is said.

Deadlines run on the escalation service's clock, moved by hand (see test_escalation.py).
"""

from __future__ import annotations

import asyncio

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import ErrorStatus, Gated, TooManyRequests
from bot.standins.slack import ApiCall
from tests.conftest import BotFactory, BotUnderTest, until
from tests.escalations import (
    ALICE,
    ALICE_ONLY,
    BOB,
    broadcasts,
    click_ack,
    click_stop,
    hung_up,
    leaping_budget,
    metrics_text,
    page_of,
    running_escalation,
    session_of,
    start,
    state_of,
    wait_for_edit,
    wait_for_post,
    wait_for_state,
)
from tests.follow_helpers import audit_records, end_session, services


async def test_an_earlier_page_acknowledged_while_bob_s_hang_up_fails_says_so_and_audits_alice(
    bot_factory: BotFactory,
) -> None:
    bot, clock, card = await running_escalation(bot_factory)
    alices_page = await page_of(bot, "U0ALICE")
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    bob = session_of(bot, BOB)
    await wait_for_edit(bot, card, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    bot.evo.queue("PATCH", f"/sessions/{bob}", ErrorStatus(500, "Internal server error"))
    await click_ack(bot, alices_page, user_id="U0ALICE")  # Alice saw her page late
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, card, "2. <@U0BOB> (+1 814 ••• 3094) — ⏹ called off: someone else "
                                   "acknowledged (Hanging up that call failed: Internal server "
                                   "error. It may still ring.)")
    # The acknowledgement is on Alice's own call in the audit trail, not on Bob's.
    acknowledged = {r.number_masked: [e for e in r.events if e.kind == "acknowledged"]
                    for r in await audit_records(bot)}
    assert [len(acknowledged[n]) for n in ("+1 814 ••• 3093", "+1 814 ••• 3094")] == [1, 0]
    assert "U0ALICE" in (acknowledged["+1 814 ••• 3093"][0].reason or "")


async def test_a_phone_hung_up_on_an_acknowledgement_is_in_the_audit_trail_with_why(
    bot_factory: BotFactory,
) -> None:
    bot, _, card = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    await click_ack(bot, card, user_id="U0ADMIN")  # not paged, allowed to escalate
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    assert hung_up(bot, alice)
    [record] = await audit_records(bot)  # Alice's call
    hang_ups = [e for e in record.events if e.kind == "hang_up"]
    assert [e.reason for e in hang_ups] == ["escalation: acknowledged by U0ADMIN"]


async def test_the_time_to_acknowledge_is_counted_from_the_escalation_s_start(
    bot_factory: BotFactory,
) -> None:
    bot, clock, _ = await running_escalation(bot_factory)
    page = await page_of(bot, "U0ALICE")
    clock.advance(45)
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    metrics = metrics_text(bot)
    assert "oncall_time_to_acknowledge_seconds_sum 45.0" in metrics
    assert 'escalations_total{outcome="acknowledged"} 1.0' in metrics


async def test_a_late_i_m_on_it_after_nobody_came_is_audited_and_counted(
    bot_factory: BotFactory,
) -> None:
    bot, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    page = await page_of(bot, "U0ALICE")
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    clock.advance(100)
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_edit(bot, card, "<@U0ALICE> acknowledged at")
    # Recorded, then announced, by the escalation's own run (not the click's task, which settle()
    # waits for): the announcement says the record is written.
    await wait_for_post(bot, "they are on it")
    await bot.settle()
    [record] = await audit_records(bot)  # Alice's call
    acknowledged = [e for e in record.events if e.kind == "acknowledged"]
    assert len(acknowledged) == 1 and acknowledged[0].actor_id == "U0ALICE"
    metrics = metrics_text(bot)
    assert 'oncall_acknowledgements_total{via="button"} 1.0' in metrics
    assert "oncall_time_to_acknowledge_seconds_sum 191.0" in metrics


async def test_stop_escalation_whose_hang_up_fails_says_the_phone_may_still_ring(
    bot_factory: BotFactory,
) -> None:
    bot, _, card = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    bot.evo.queue("PATCH", f"/sessions/{alice}", ErrorStatus(500, "Internal server error"))
    await click_stop(bot, card, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.STOPPED)
    await wait_for_edit(bot, card, "1. <@U0ALICE> (+1 814 ••• 3093) — ⏹ stopped while ringing "
                                   "(Hanging up that call failed: Internal server error. It may "
                                   "still ring.)")


@pytest.mark.parametrize("refusal", ["bad_request", "conflict"])
async def test_stop_as_alice_s_call_ends_on_its_own_never_says_it_may_still_ring(
    bot_factory: BotFactory, refusal: str
) -> None:
    # Her call ended a moment before Stop, unseen yet (the poll that would show it is held), and
    # Evo Voice refuses to end a session that has ended (nothing public says it doesn't): the
    # session is read, and the card says her call ended, not that it may still ring.
    bot, _, card = await running_escalation(bot_factory)
    bot.evo.ended_hang_up = refusal
    alice = session_of(bot, ALICE)
    poll_may_answer = asyncio.Event()
    polls = len(bot.evo.requests_to("GET", "/sessions"))
    bot.evo.queue("GET", "/sessions", Gated(poll_may_answer))
    await until(lambda: len(bot.evo.requests_to("GET", "/sessions")) > polls)
    end_session(bot, alice, after_seconds=20, outcome="No answer")
    await click_stop(bot, card, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.STOPPED)
    poll_may_answer.set()
    await wait_for_edit(bot, card, "stopped by <@U0ADMIN>")
    await bot.settle()
    shown = str(bot.slack.messages[(card.channel, card.ts)].text)
    assert "may still ring" not in shown and "failed" not in shown, shown
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events if e.kind.startswith("hang_up")] == []


NOBODY_CAME = "Nobody acknowledged the on-call escalation"


def nobody_came(call: ApiCall) -> bool:
    return NOBODY_CAME in str(call.params.get("text"))


def said(texts: list[str]) -> list[str]:
    """What each broadcast says, in a word."""
    return ["nobody came" if NOBODY_CAME in t else "on it" if "they are on it" in t else t
            for t in texts]


async def wait_until_acknowledged(bot: BotUnderTest) -> None:
    async def recorded() -> None:
        while not await services(bot).db.fetchall(
                "SELECT id FROM escalations WHERE acknowledged_by IS NOT NULL"):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(recorded(), 10.0)


async def test_i_m_on_it_while_nobody_came_is_being_broadcast_is_broadcast_after_it(
    bot_factory: BotFactory,
) -> None:
    """Alice clicks I'm on it while Slack is still taking "Nobody acknowledged": the channel's
    last word is that she is on it, not that nobody is coming."""
    bot, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    page = await page_of(bot, "U0ALICE")
    gate = bot.slack.hold("chat.postMessage", when=nobody_came)
    clock.advance(91)
    await gate.wait_until_held()
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_until_acknowledged(bot)  # recorded while Slack still holds the broadcast
    gate.open()
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, card, "<@U0ALICE> acknowledged at")
    await wait_for_post(bot, "they are on it")  # told under the escalation's lease, as its end
    await bot.settle()
    assert said(broadcasts(bot)) == ["nobody came", "on it"]


async def test_stop_while_nobody_came_is_being_broadcast_is_told_the_escalation_is_over(
    bot_factory: BotFactory,
) -> None:
    """Everybody was tried and the channel is being told so: Stop comes too late, and the card
    and the channel say the same end."""
    bot, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    gate = bot.slack.hold("chat.postMessage", when=nobody_came)
    clock.advance(91)
    await gate.wait_until_held()
    _, url = await click_stop(bot, card, user_id="U0ADMIN")
    await bot.settle()
    gate.open()
    assert await state_of(bot) == EscalationState.EXHAUSTED
    [refusal] = await bot.slack.wait_for_response(url)
    assert "already over" in str(refusal.get("text"))
    await wait_for_edit(bot, card, "nobody acknowledged.")
    assert said(broadcasts(bot)) == ["nobody came"]


async def test_nobody_came_decided_as_the_bot_stopped_is_broadcast_by_the_next_start(
    bot_factory: BotFactory,
) -> None:
    """The bot stopped right after writing that nobody came, before saying so (the row as its
    compare-and-set left it, the lease lapsed): the next start says it, once."""
    first, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    await services(first).escalations.stop()  # the chain paused, its lease left lapsed
    await services(first).db.execute(
        "UPDATE escalations SET state = ?, step = 1, finished_at = ?",
        (str(EscalationState.EXHAUSTED), clock()))
    await first.runtime.stop(grace=5)
    second, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock)
    await wait_for_edit(second, card, "nobody acknowledged.")
    await second.settle()
    assert said(broadcasts(second)) == ["nobody came"]


def hold_escalation_lease_release(
    bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """The bot's escalation task, its work over, holds on to its lease: `finishing` is set when
    it would give it back, which it does once `let_go` is set."""
    leases = services(bot).leases
    release, finishing, let_go = leases.release, asyncio.Event(), asyncio.Event()

    async def held_release(kind: str, row_id: int | None = None) -> None:
        if kind == "escalation" and row_id is not None:
            finishing.set()
            await let_go.wait()
        await release(kind, row_id)

    monkeypatch.setattr(leases, "release", held_release)
    return finishing, let_go


async def test_a_late_i_m_on_it_slack_refuses_while_the_chain_s_task_is_finishing_is_shown(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nobody came and the card says so; the chain's task is giving its lease back (its work
    over) when Alice's late I'm on it lands, and Slack refuses that edit: the card still comes to
    say she is on it (tried again after the task), and the channel hears it once."""
    bot, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    page = await page_of(bot, "U0ALICE")
    finishing, let_go = hold_escalation_lease_release(bot, monkeypatch)
    clock.advance(91)
    await asyncio.wait_for(finishing.wait(), 10.0)  # "nobody acknowledged" shown; task ending
    await wait_for_edit(bot, card, "nobody acknowledged.")
    bot.slack.fail("chat.update", "internal_error", times=1)  # the late edit of the card
    await click_ack(bot, page, user_id="U0ALICE")
    await bot.settle()  # the click's work: its edit refused, handed over to the task ending
    let_go.set()
    shown = bot.slack.messages[(card.channel, card.ts)]
    await until(lambda: "<@U0ALICE> acknowledged at" in str(shown.text), timeout=10.0)
    await bot.settle()
    assert said(broadcasts(bot)) == ["nobody came", "on it"]


async def test_a_late_i_m_on_it_slack_refuses_on_another_replica_is_shown_once_the_task_ends(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two replicas on one database. Nobody came; replica A's task for the chain is giving its
    lease back (its work over, its last look at the row before the click) when Alice's late I'm
    on it lands on replica B, and Slack refuses B's edit: B cannot take the lease A still holds,
    so it keeps trying, and once A lets go B takes it and the card comes to say she is on it; the
    channel hears it once."""
    first, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    page = await page_of(first, "U0ALICE")
    leases = services(first).leases
    finishing, let_go = hold_escalation_lease_release(first, monkeypatch)
    clock.advance(91)
    await asyncio.wait_for(finishing.wait(), 10.0)  # "nobody acknowledged" shown; A's task ending
    await wait_for_edit(first, card, "nobody acknowledged.")
    second, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock)
    assert services(second).leases.owner != leases.owner
    first.slack.fail("chat.update", "internal_error", times=1)  # B's edit of the card
    await click_ack(second, page, user_id="U0ALICE")
    await second.settle()  # the click's work: its edit refused; A still holds the lease
    shown = first.slack.messages[(card.channel, card.ts)]
    assert "<@U0ALICE> acknowledged at" not in str(shown.text)
    let_go.set()
    await until(lambda: "<@U0ALICE> acknowledged at" in str(shown.text), timeout=10.0)
    await first.settle()
    await second.settle()
    assert said(broadcasts(first)) == ["nobody came", "on it"]


async def test_i_m_on_it_after_a_nobody_came_slack_refused_is_posted_after_it(
    bot_factory: BotFactory,
) -> None:
    """Slack refuses "Nobody acknowledged" (a 5xx), so the outbox is to send it again in a moment;
    Alice's late I'm on it comes meanwhile. The thread still says them in order: the channel's last
    word is that she is on it, not that nobody is coming."""
    bot, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    page = await page_of(bot, "U0ALICE")
    outbox = services(bot).outbox
    paused, resume = asyncio.Event(), asyncio.Event()

    async def held_pause(seconds: float) -> None:  # the outbox's pause before sending again
        paused.set()
        await resume.wait()

    outbox.sleep = held_pause
    bot.slack.fail("chat.postMessage", "internal_error", times=1, when=nobody_came)
    clock.advance(91)
    await asyncio.wait_for(paused.wait(), 10.0)  # refused, to be sent again
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_until_acknowledged(bot)
    await bot.settle()
    resume.set()
    await until(lambda: len(broadcasts(bot)) == 2, timeout=10.0)
    await bot.settle()
    assert said(broadcasts(bot)) == ["nobody came", "on it"]
    thread = [m.text or "" for m in bot.slack.thread(card.channel, card.thread_ts or card.ts)
              if m.ts != card.ts]
    assert said(thread) == ["nobody came", "on it"]  # in the thread's order too


@pytest.mark.parametrize("retry_after", ["1", None], ids=["retry-after", "no-retry-after"])
async def test_a_hang_up_evo_voice_answers_429_is_sent_again_and_the_phone_stops(
    bot_factory: BotFactory, retry_after: str | None
) -> None:
    # Nothing public says Evo Voice limits requests; a 429 says "not now": nothing was done, as
    # the bot reads it when it dials again. Alice's phone, rung past her deadline, is hung up
    # once the wait is over, not left ringing with a card saying it "may still ring".
    bot, clock, card = await running_escalation(bot_factory)
    leaping_budget(bot)  # the budget's pause after the 429 takes no real time
    alice = session_of(bot, ALICE)
    bot.evo.queue("PATCH", f"/sessions/{alice}", TooManyRequests(retry_after))
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    await until(lambda: hung_up(bot, alice))
    await wait_for_edit(bot, card, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    await bot.settle()
    assert "may still ring" not in str(card.text), card.text
    assert len(bot.evo.requests_to("PATCH", f"/sessions/{alice}")) == 2
