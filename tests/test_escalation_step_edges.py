"""What an escalation's steps say and do at their edges, each pinned where a mutation of
bot/oncall/escalation_steps.py went unnoticed by the other escalation tests (/work/tools/mutate.py):
why a step's call couldn't be placed, what a step that timed out says when its call ended on
its own, and a call the follower saw answered whose session can't be read at the deadline."""

from __future__ import annotations

from bot.standins.evovoice import ErrorStatus
from tests.conftest import BotFactory, until
from tests.follow_helpers import poll_now, services
from tests.escalations import (
    ALICE,
    BOB,
    dialled,
    died_dialling_alice,
    escalation_message,
    hung_up,
    open_on_message,
    picked_up_unseen,
    running_escalation,
    session_of,
    start,
    steps_past_alices_refused,
    submit,
    wait_for_edit,
)


async def test_a_step_whose_call_evo_voice_refused_says_why(bot_factory: BotFactory) -> None:
    """Evo Voice refuses Alice's call for good (a 400): her step says why in Evo Voice's words,
    not only that the call was not placed, and Bob is rung."""
    bot, _ = await start(bot_factory)
    bot.evo.queue_outgoing(ErrorStatus(400, "Invalid flow"))
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(2)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    assert dialled(bot) == [ALICE, BOB]
    assert ("1. <@U0ALICE> (+1 814 ••• 3093) — ⚠️ couldn't be called: Evo Voice refused the "
            "call: Invalid flow. Nothing was dialled." in (escalation.text or ""))


async def test_a_step_whose_call_ended_on_its_own_at_its_deadline_says_no_more(
    bot_factory: BotFactory,
) -> None:
    """The bot died dialling Alice; the next start finds her call (its row noted "callbot
    restarted while placing this call"). It ends unanswered unseen by the follower, and at her
    deadline hanging it up finds it gone (404): her step says no answer, and nothing of how her
    call was placed (that note is for a call's own status message), and Bob is rung."""
    first, clock, alice = await died_dialling_alice(bot_factory)
    second, _ = await start(bot_factory, clock=clock)
    escalation = await escalation_message(second)
    await until(lambda: "🔔 ringing…" in (escalation.text or ""))
    # Her call ends unanswered while the follower's poll is out: unseen until her deadline.
    poll_answered = await picked_up_unseen(second, alice, callState="Disconnected", ended=True)
    for method in ("DELETE", "PATCH"):  # and Evo Voice no longer knows it to hang it up
        second.evo.queue(method, f"/sessions/{alice}", ErrorStatus(404, "Not found"))
    clock.advance(91)
    await second.evo.wait_for_posts(2)
    await wait_for_edit(second, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    poll_answered.set()
    assert "1. <@U0ALICE> — ❌ no answer after 90 s\n" in (escalation.text or ""), escalation.text
    assert dialled(second) == [ALICE, BOB]
    await second.settle()  # paged once, by the start that followed her call: not again at its end
    assert len([c for c in second.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0ALICE" and c.ok]) == 1


async def test_a_call_seen_answered_is_not_acknowledged_though_its_deadline_read_fails(
    bot_factory: BotFactory,
) -> None:
    """Alice picks up (the follower sees it) but doesn't press 1. At her deadline Evo Voice
    refuses the fresh read of her session (500): her call's row already says it was answered, so
    her step says so, not that Evo Voice could not say; her call is left on and Bob is rung."""
    bot, clock, escalation = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    bot.evo.set_session_state(alice, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🟢 on the phone, "
                                         "not acknowledged yet")
    bot.evo.queue("GET", f"/sessions/{alice}", ErrorStatus(500, "Internal server error"))
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ the call was "
                                         "answered but not acknowledged")
    assert "could not say whether it was answered" not in (escalation.text or "")
    assert not hung_up(bot, alice)


async def test_a_step_its_checks_refuse_goes_on_to_the_next_person_at_once(
    bot_factory: BotFactory,
) -> None:
    """Evo Voice can't list its flows when Bob's and the manager's steps come, so their checks
    refuse them: the same run of the chain goes on past each at once, to its end, not at the
    lease keeper's next round (none comes here: the keeper is stopped)."""
    bot, clock, escalation = await running_escalation(bot_factory)
    await services(bot).leases.stop()
    await steps_past_alices_refused(bot, clock)
    await wait_for_edit(bot, escalation, "4. <@U0MANAGER> (escalate_to) — ⚠️ couldn't be called")
    assert dialled(bot) == [ALICE]
