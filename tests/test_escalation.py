"""Escalate to on-call end to end: the shortcuts and their prefilled modal, the chain in the
message's thread (unacknowledged → next person → escalate_to → exhausted), Stop escalation, a
restart mid-chain, and one chain per submitted form. Acknowledging (I'm on it, flow outcomes,
`ack = "answer"`) has its own file, test_escalation_ack.py.

Deadlines run on the escalation service's clock, which these tests move by hand: nobody waits for
answer_timeout, and nothing here depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import json
import re
import logging

import pytest

from bot.oncall.escalation_form import ESCALATION_FORM_CALLBACK_ID, EscalationField
from bot.oncall.escalation_store import EscalationState
from bot.oncall.escalation_views import ACK_ESCALATION_ACTION, STOP_ESCALATION_ACTION
from bot.standins.evovoice import Delayed, ErrorStatus, Gated
from bot.standins.slack import Message, block_actions_payload, interactive_body
from tests.conftest import POLICY, Ack, BotFactory, BotUnderTest
from tests.databases import on_both_databases
from tests.escalations import (
    ALICE_ONLY,
    ALICE,
    BOB,
    CHANNEL,
    MANAGER,
    IN_CAROLS_SHIFT,
    ROSTER,
    as_first_drawn,
    click_ack,
    click_stop,
    dialled,
    escalation_message,
    has_stop_button,
    hung_up,
    metrics_text,
    open_global,
    open_on_message,
    page_of,
    posts_in,
    reason_block,
    running_escalation,
    session_of,
    start,
    state_of,
    submit,
    wait_for_edit,
    wait_for_post,
    wait_for_state,
)
from tests.follow_helpers import audit_records, services

# ------------------------------------------------------------------------------------- the form


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_message_shortcut_opens_a_prefilled_form(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode)
    view, message = await open_on_message(
        bot, text="db primary is down <@U0BOB> &amp; <https://status.example.com|status page>")
    shown = view.versions[-1]
    assert shown["callback_id"] == ESCALATION_FORM_CALLBACK_ID
    assert shown["title"]["text"] == "Escalate to on-call" and shown["submit"]["text"] == "Escalate"
    text = json.dumps(shown["blocks"], ensure_ascii=False)
    assert "*On call now:* <@U0ALICE> · +1 814 ••• 3093 · until Mon 16 Mar 09:00 EDT" in text
    assert ("Then: <@U0BOB>, then <@U0CAROL> (⚠️ no usable phone number: skipped), then "
            "<@U0MANAGER> (escalate_to)") in text
    assert "*Flow:* “Escalation”" in text
    assert "90 s" in text
    reason = reason_block(shown)["element"]["initial_value"]
    assert reason.startswith(
        "“db primary is down @U0BOB & status page (https://status.example.com)” — ")
    permalink = f"https://test.slack.com/archives/{CHANNEL}/p{message.ts.replace('.', '')}"
    assert reason.endswith(permalink)
    assert [c.params["message_ts"] for c in bot.slack.calls_to("chat.getPermalink")] == [message.ts]
    assert EscalationField.CHANNEL not in text  # the message says where
    assert ALICE not in text and BOB not in text  # numbers are masked
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_long_message_prefills_a_reason_the_field_can_hold(bot_factory: BotFactory) -> None:
    # Slack refuses a view whose text input starts out longer than its max_length: a reason
    # copied whole from a long alert would leave the shortcut opening nothing.
    bot, _ = await start(bot_factory, "http")
    view, message = await open_on_message(bot, text="🔥 db primary is down " * 300)
    element = reason_block(view.versions[-1])["element"]
    reason = element["initial_value"]
    assert len(reason) <= element["max_length"]
    assert reason.startswith("“🔥 db primary is down 🔥") and "…”" in reason
    assert reason.endswith(f"/archives/{CHANNEL}/p{message.ts.replace('.', '')}")


async def test_a_link_the_quote_cuts_short_is_left_out_not_broken(
    bot_factory: BotFactory,
) -> None:
    # A quoted alert is trimmed to fit the reason: cut inside its dashboard's address, the
    # reason showed the head of the address, which Slack makes a link to some other page.
    bot, _ = await start(bot_factory, "http")
    dashboard = "https://grafana.example.com/d/db-primary?orgId=1&var-host=db1"
    view, _ = await open_on_message(
        bot, text="db primary is down " * 14 + f"<{dashboard}|dashboard>")
    reason = reason_block(view.versions[-1])["element"]["initial_value"]
    assert reason.startswith("“db primary is down db primary")
    assert "grafana" not in reason
    assert reason.endswith(f"/archives/{CHANNEL}/p{_.ts.replace('.', '')}")


async def test_a_long_alert_with_a_less_than_sign_is_quoted_up_to_the_limit(
    bot_factory: BotFactory,
) -> None:
    # The quote is plain text until the card escapes it: its `<` is no mention to keep whole.
    bot, _ = await start(bot_factory, "http")
    view, _ = await open_on_message(bot, text="CPU &lt; 10% idle on db1: " + "load rising, " * 30)
    reason = reason_block(view.versions[-1])["element"]["initial_value"]
    assert reason.startswith("“CPU < 10% idle on db1: load rising, load rising, load rising")


@pytest.mark.parametrize("mode", ["http", "socket"])
@pytest.mark.parametrize("unclosed", ["<!", "<http:"])
async def test_a_message_full_of_unclosed_markup_is_quoted_and_the_form_opens(
    bot_factory: BotFactory, mode: str, unclosed: str
) -> None:
    # A message at Slack's 40,000 characters of text, from an integration that posts markup as
    # it comes (an alert quoting what it saw): each `<!` or `<http:` left unclosed made
    # the quoting read on to the end of the text from there, over and over, holding the event
    # loop for many seconds. The trigger (3 s) expired meanwhile, and the form never opened.
    bot, _ = await start(bot_factory, mode)
    text = (unclosed * (40_000 // len(unclosed)))[:40_000]
    view, _ = await open_on_message(bot, text=text)
    reason = reason_block(view.versions[-1])["element"]["initial_value"]
    assert reason.startswith("“" + unclosed * 3)
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_the_on_call_person_without_a_number_is_flagged_and_skipped(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory, at=IN_CAROLS_SHIFT)  # Carol has no [people] entry, no phone
    view, message = await open_on_message(bot)
    text = json.dumps(view.versions[-1]["blocks"], ensure_ascii=False)
    assert ("<@U0CAROL> · ⚠️ no usable phone number (not in [people], and the Slack profile has "
            "no phone number)") in text
    assert "They will be skipped" in text

    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    # The card says why: the reason the form warned of, not a bare "skipped".
    await wait_for_edit(bot, escalation, "1. <@U0CAROL> — ⏭ skipped: no usable phone number "
                        "(not in [people], and the Slack profile has no phone number)")
    await bot.evo.wait_for_posts(1)
    assert dialled(bot) == [ALICE]  # the next in the rotation after Carol
    await wait_for_edit(bot, escalation, "2. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    assert escalation.thread_ts == message.ts


async def test_someone_after_the_first_without_a_number_is_shown_as_skipped(
    bot_factory: BotFactory,
) -> None:
    # Carol (no [people] entry, no phone) comes after Alice and Bob: the chain skips her (see
    # test_nobody_answers_the_chain_goes_down_the_rotation_then_escalate_to), so the form
    # must not list her among those who will be called as if she would be.
    bot, _ = await start(bot_factory)
    view, _ = await open_on_message(bot)
    text = json.dumps(view.versions[-1]["blocks"], ensure_ascii=False)
    assert ("Then: <@U0BOB>, then <@U0CAROL> (⚠️ no usable phone number: skipped), then "
            "<@U0MANAGER> (escalate_to).") in text


async def test_when_nobody_in_the_order_has_a_number_the_form_says_nobody_would_be_called(
    bot_factory: BotFactory,
) -> None:
    policy = POLICY + '[oncall]\nflow = "Escalation"\nrotation = ["U0CAROL"]\n'
    bot, _ = await start(bot_factory, policy=policy)  # Carol: no [people] entry, no phone
    view, _ = await open_on_message(bot)
    text = json.dumps(view.versions[-1]["blocks"], ensure_ascii=False)
    assert "the escalation starts with the next person" not in text
    assert "nobody would be called" in text


async def test_with_one_person_after_the_first_the_form_names_them(
    bot_factory: BotFactory,
) -> None:
    policy = POLICY + '[people]\nU0ALICE = "+18144043093"\nU0BOB = "+18144043094"\n' + (
        '[oncall]\nflow = "Escalation"\nrotation = ["U0ALICE", "U0BOB"]\n')
    bot, _ = await start(bot_factory, policy=policy)
    view, _ = await open_on_message(bot)
    text = json.dumps(view.versions[-1]["blocks"], ensure_ascii=False)
    assert "Then: <@U0ALICE>." in text and "nobody comes after" not in text


@pytest.mark.parametrize(("ack", "said"), [
    ("", "Each person has 90 s to acknowledge the page. Then:"),
    ('ack = "answer"\n', "Each person has 90 s to answer. Then:"),
])
async def test_the_form_says_what_each_person_has_the_time_to_do(
    bot_factory: BotFactory, ack: str, said: str
) -> None:
    # With acknowledgements (the default) a call answered but not acknowledged moves on at the
    # deadline: a form saying "to answer" told the requester an answer was enough.
    bot, _ = await start(bot_factory, policy=ROSTER + ack)
    view, _ = await open_on_message(bot)
    text = json.dumps(view.versions[-1]["blocks"], ensure_ascii=False)
    assert said in text, text


async def test_a_guest_gets_a_notice(bot_factory: BotFactory) -> None:
    bot, _ = await start(bot_factory)
    bot.slack.users["U0INTRUDER"] = {"is_restricted": True}
    view, _ = await open_on_message(bot, user_id="U0INTRUDER")
    shown = view.versions[-1]
    assert "submit" not in shown
    text = json.dumps(shown["blocks"])
    assert "not allowed to escalate to on-call" in text and "guests" in text
    assert "3093" not in text  # no roster for those who may not see it


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_right_to_escalate_is_checked_again_on_submit(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode, policy=ROSTER + 'responders = ["S0LEADS"]\n')
    view, _ = await open_on_message(bot, user_id="U0LEAD1")  # a Manager through user group S0LEADS
    bot.slack.usergroups["S0LEADS"] = ["U0LEAD2"]
    services(bot).access.forget_groups()  # removed from the group meanwhile
    answer = await submit(bot, view, user_id="U0LEAD1")
    assert answer["response_action"] == "errors"
    assert "not allowed to escalate to on-call" in answer["errors"][EscalationField.REASON]
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    assert await services(bot).db.fetchall("SELECT id FROM escalations") == []


async def test_a_group_lookup_failing_on_escalate_is_explained_under_the_reason(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory, policy=ROSTER + 'responders = ["S0LEADS"]\n')
    view, _ = await open_on_message(bot, user_id="U0LEAD1")  # a Manager through user group S0LEADS
    bot.slack.fail("usergroups.users.list", "missing_scope")
    services(bot).access.forget_groups()
    answer = await submit(bot, view, user_id="U0LEAD1")
    assert answer["response_action"] == "errors"
    assert "usergroups:read" in answer["errors"][EscalationField.REASON]
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_without_oncall_the_shortcuts_explain_how_to_set_it_up(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory, policy=POLICY)
    view, _ = await open_on_message(bot)
    text = json.dumps(view.versions[-1]["blocks"])
    assert "submit" not in view.versions[-1]
    assert "No on-call rotation is set up" in text and "[oncall]" in text and "rotation" in text
    view = await open_global(bot, user_id="U0INTRUDER")
    assert "No on-call rotation is set up" in json.dumps(view.versions[-1]["blocks"])


async def test_when_evo_voice_cannot_list_the_flows_the_form_opens_and_escalate_says_why(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory)
    services(bot).catalog.forget()
    bot.evo.queue("GET", "/flows", *[ErrorStatus(500)] * 4)  # the open's read, Escalate's read
    view, _ = await open_on_message(bot)
    await bot.settle()
    shown = view.versions[-1]
    assert shown["submit"]["text"] == "Escalate"  # the form, the flow as configured
    assert "*Flow:* “Escalation”" in json.dumps(shown["blocks"], ensure_ascii=False)
    answer = await submit(bot, view)
    assert answer["response_action"] == "errors"
    assert "The escalation flow can't be used" in answer["errors"][EscalationField.REASON]
    await bot.settle()
    assert bot.evo.outgoing_posts == []


# ------------------------------------------------------------------------------------- the chain


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_with_ack_answer_the_call_connecting_ends_the_escalation_as_before(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode, policy=ROSTER + 'ack = "answer"\n')
    view, message = await open_on_message(bot)
    assert await submit(bot, view) == {}  # the modal closes

    escalation = await escalation_message(bot)
    assert escalation.thread_ts == message.ts  # in the message's thread, not the channel
    assert "🚨 *On-call escalation* by <@U0ADMIN>" in (escalation.text or "")
    assert "db primary is down" in (escalation.text or "")
    assert has_stop_button(escalation)
    await bot.evo.wait_for_posts(1)
    [post] = bot.evo.outgoing_posts
    assert post.json["numberToDial"] == ALICE and post.json["flowId"] == "flow-esc"
    await wait_for_edit(bot, escalation, "<@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")

    bot.evo.set_session_state(session_of(bot, ALICE), callState="Connected",
                              answeredByName="Alice")
    await wait_for_edit(bot, escalation, "<@U0ALICE> answered.")
    assert "1. <@U0ALICE> (+1 814 ••• 3093) — ✅ answered" in (escalation.text or "")
    assert "90 s to answer" in json.dumps(escalation.blocks, ensure_ascii=False)
    assert not has_stop_button(escalation)
    await wait_for_state(bot, EscalationState.ANSWERED)
    await bot.settle()
    assert dialled(bot) == [ALICE]
    # Everything went into the message's thread, and no post says what the message shows.
    thread = posts_in(bot, CHANNEL, message.ts)
    assert [m.text for m in bot.slack.channel_messages(CHANNEL)] == [message.text]
    assert not any("<@U0ALICE> answered" in (m.text or "") for m in thread
                   if m.ts != escalation.ts)
    metrics = metrics_text(bot)
    assert "escalations_total{outcome=\"answered\"} 1.0" in metrics
    assert "oncall_acknowledgements_total{via=\"answer\"} 1.0" in metrics


async def test_a_reply_escalates_in_its_thread(bot_factory: BotFactory) -> None:
    bot, _ = await start(bot_factory)
    root = bot.slack.add_message(CHANNEL, "checkout is slow")
    view, reply = await open_on_message(bot, text="now it is down", thread_ts=root.ts)
    assert reply.thread_ts == root.ts
    await submit(bot, view)
    escalation = await escalation_message(bot)
    assert escalation.thread_ts == root.ts
    # Sent under the thread's root, "message.thread_ts or message.ts" (docs/slack-platform.md):
    # what Slack does with a reply's ts is not known, though the stand-in threads it at the root.
    assert all(c.params.get("thread_ts") in (None, root.ts)
               for c in bot.slack.calls_to("chat.postMessage"))
    await bot.evo.wait_for_posts(1)
    await wait_for_edit(bot, escalation, "— 🔔 ringing…")
    # The card alone in the thread: Alice's call posts nothing of its own.
    assert [m.ts for m in posts_in(bot, CHANNEL, root.ts)] == [reply.ts, escalation.ts]


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_global_shortcut_asks_for_the_channel_and_starts_a_thread_there(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode)
    view = await open_global(bot)
    shown = view.versions[-1]
    channel = next(b for b in shown["blocks"] if b.get("block_id") == EscalationField.CHANNEL)
    assert channel["element"]["type"] == "conversations_select"
    assert "initial_value" not in reason_block(shown)["element"]
    assert "in a new thread in the channel you choose" in json.dumps(shown["blocks"])

    answer = await submit(bot, view, reason="INC-7: payments down")  # no channel chosen
    assert answer["response_action"] == "errors"
    assert "Choose a channel" in answer["errors"][EscalationField.CHANNEL]
    assert await submit(bot, view, reason="INC-7: payments down", channel="C0INC") == {}

    escalation = await escalation_message(bot)
    assert escalation.channel == "C0INC" and not escalation.is_reply  # a new thread's root
    assert "INC-7: payments down" in (escalation.text or "")
    assert "Flow “Escalation”" in json.dumps(escalation.blocks, ensure_ascii=False)  # not its ID
    await bot.evo.wait_for_posts(1)
    await wait_for_edit(bot, escalation, "— 🔔 ringing…")
    assert bot.slack.channel_messages("C0INC") == [escalation]
    assert posts_in(bot, "C0INC", escalation.ts) == []


@on_both_databases
async def test_nobody_answers_the_chain_goes_down_the_rotation_then_escalate_to(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    view, message = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    alice = session_of(bot, ALICE)
    await wait_for_edit(bot, escalation, "🔔 ringing…")

    clock.advance(91)  # Alice's phone rang for answer_timeout without an answer
    await wait_for_edit(bot, escalation,
                        "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s")
    await bot.evo.wait_for_posts(2)
    assert hung_up(bot, alice)  # her phone stopped ringing before Bob's started
    # The login holds Manager only, not User, which EndSession (DELETE) needs: PatchSession.
    order = [(r.method, r.path) for r in bot.evo.requests
             if r.method in ("POST", "DELETE", "PATCH")]
    assert order == [("POST", "/sessions/outgoing"), ("PATCH", f"/sessions/{alice}"),
                     ("POST", "/sessions/outgoing")]

    bob = session_of(bot, BOB)
    bot.evo.set_session_state(bob, ended=True, callState="Disconnected", outcome="Busy")
    # Bob's call ended unanswered before the timeout; Carol has no number; the manager is next.
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — ❌ didn't answer")
    await bot.evo.wait_for_posts(3)
    assert dialled(bot) == [ALICE, BOB, MANAGER]
    assert not hung_up(bot, bob)

    await wait_for_edit(bot, escalation, "<@U0MANAGER> (escalate_to) (+1 814 ••• 3090) — 🔔")
    # Pages go in the background, drawn as things stand when sent: one a busy machine sent only
    # after the end would rightly say nobody acknowledged. Each is out before the end comes.
    for person in ("U0ALICE", "U0BOB", "U0CAROL", "U0MANAGER"):
        await page_of(bot, person)
    clock.advance(91)
    loud = await wait_for_post(bot, "Nobody acknowledged the on-call escalation")
    assert loud.params["text"].startswith("🚨 <@U0ADMIN>")  # the requester, mentioned
    assert loud.params["reply_broadcast"] in (True, "true", "1")  # also shown in the channel
    assert loud.params["thread_ts"] == message.ts
    await wait_for_edit(bot, escalation, "nobody acknowledged.")
    assert hung_up(bot, session_of(bot, MANAGER))
    assert await state_of(bot) == EscalationState.EXHAUSTED
    assert not has_stop_button(escalation)
    assert ACK_ESCALATION_ACTION in json.dumps(escalation.blocks)  # a late "I'm on it" helps
    final = escalation.text or ""
    assert "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s" in final
    assert "2. <@U0BOB> (+1 814 ••• 3094) — ❌ didn't answer (the call ended)" in final
    assert "3. <@U0CAROL> — ⏭ skipped: no usable phone number" in final
    assert "4. <@U0MANAGER> (escalate_to) (+1 814 ••• 3090) — ❌ no answer after 90 s" in final
    # The thread is calm: the escalation's message, edited, and one loud post at the end.
    ours = [m.text or "" for m in posts_in(bot, CHANNEL, message.ts)]
    assert len(ours) == 2 and "*On-call escalation*" in ours[0] and "Nobody acknowledged" in ours[1]
    # Each person got a page in Slack, too: Carol, whose phone couldn't be rung, all the same.
    for person in ("U0ALICE", "U0BOB", "U0CAROL", "U0MANAGER"):
        [page] = bot.slack.channel_messages(bot.slack.dm_channel(person))
        assert "You are being paged" in (page.versions[0]["text"] or "")
    [carols] = bot.slack.channel_messages(bot.slack.dm_channel("U0CAROL"))
    assert "Your phone is ringing" not in (carols.versions[0]["text"] or "")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 3
    assert "oncall_pages_total 4.0" in metrics_text(bot)


async def test_a_slow_evo_voice_does_not_eat_into_the_answer_time(bot_factory: BotFactory) -> None:
    bot, clock = await start(bot_factory)
    answer = asyncio.Event()
    bot.evo.queue_outgoing(Gated(answer))
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    clock.advance(60)  # Evo Voice takes a minute to answer the POST
    answer.set()
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    # Her phone rings from now: the step's deadline is 90 s away, not 30.
    [row] = await services(bot).db.fetchall("SELECT step_deadline FROM escalations")
    assert row["step_deadline"] == pytest.approx(clock.now + 90, abs=0.001)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    assert hung_up(bot, session_of(bot, ALICE))


async def test_a_failed_hang_up_is_said_and_the_chain_goes_on(bot_factory: BotFactory) -> None:
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await bot.evo.wait_for_posts(1)
    alice = session_of(bot, ALICE)
    bot.evo.queue("PATCH", f"/sessions/{alice}", ErrorStatus(500, "Internal server error"))
    await wait_for_edit(bot, await escalation_message(bot), "🔔 ringing…")
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    note = await bot.slack.wait_for_call(
        "chat.update", lambda c: "Hanging up that call failed" in str(c.params.get("text")))
    # Why, in words about hanging up: nothing says the ringing call was never dialled.
    text = str(note.params["text"])
    assert "Internal server error. It may still ring." in text and "dialled" not in text, text
    assert dialled(bot) == [ALICE, BOB]


# ---------------------------------------------------------------------------- the audit trail


async def test_every_step_s_call_leaves_one_audit_record_with_its_outcome(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory)
    refused = ErrorStatus(401, "Invalid UserName or Password")
    bot.evo.queue_outgoing(refused)
    bot.evo.queue("POST", "/auth/credentials", refused)  # the sign-in that follows: refused too
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(2)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    # The card names the number Evo Voice refused to call, as it does for any call.
    assert "1. <@U0ALICE> (+1 814 ••• 3093) — ⚠️ couldn't be called" in (escalation.text or "")
    records = list(reversed(await audit_records(bot)))  # oldest first
    assert [(r.origin, r.number_masked, r.decision) for r in records] == [
        ("escalation", "+1 814 ••• 3093", "allowed"), ("escalation", "+1 814 ••• 3094", "allowed")]
    assert [[e.kind for e in r.events] for r in records] == [["failed"], ["placed"]]
    [bobs_session] = bot.evo.sessions  # the placed call's record names its session
    assert [r.result.session_id for r in records if r.result] == [None, bobs_session]


async def test_a_step_its_checks_refuse_leaves_one_audit_record_of_the_refusal(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    # The policy's default caller ID is released from the account while Alice's phone rings:
    # the next steps are refused by their checks.
    bot.evo.phone_numbers[:] = [
        n for n in bot.evo.phone_numbers if n["phoneNumber"] != "+18145550100"
    ]
    services(bot).catalog.forget()  # as when the cached list expires
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    assert dialled(bot) == [ALICE]
    await wait_for_edit(bot, escalation, "2. <@U0BOB> — ⚠️ couldn't be called")
    records = list(reversed(await audit_records(bot)))  # oldest first
    # Bob and the manager refused; Carol, without a number, was skipped before any check.
    assert [(r.number_masked, r.decision) for r in records] == [
        ("+1 814 ••• 3093", "allowed"), ("+1 814 ••• 3094", "refused"),
        ("+1 814 ••• 3090", "refused")]
    assert [[e.kind for e in r.events][:1] for r in records] == [["placed"], [], []]
    assert all(r.origin == "escalation" for r in records)
    assert [r.reason for r in records] == [None, "CallerIdNotOwned", "CallerIdNotOwned"]


# ------------------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_stop_escalation_by_the_requester_or_a_manager_only(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, clock = await start(bot_factory, mode)
    view, message = await open_on_message(bot, user_id="U0LEAD1")
    await submit(bot, view, user_id="U0LEAD1")
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    await wait_for_edit(bot, escalation, "🔔 ringing…")

    _, url = await click_stop(bot, escalation, user_id="U0INTRUDER")
    [answer] = await bot.slack.wait_for_response(url)
    assert answer["response_type"] == "ephemeral"
    assert "not allowed to stop this escalation" in answer["text"]
    await bot.settle()
    assert await state_of(bot) == EscalationState.RUNNING
    assert not hung_up(bot, session_of(bot, ALICE))

    await click_stop(bot, escalation, user_id="U0ADMIN")  # a SystemAdministrator
    await wait_for_edit(bot, escalation,
                        "1. <@U0ALICE> (+1 814 ••• 3093) — ⏹ stopped while ringing")
    assert "stopped by <@U0ADMIN>." in (escalation.text or "")
    assert hung_up(bot, session_of(bot, ALICE))
    assert not has_stop_button(escalation)
    await wait_for_state(bot, EscalationState.STOPPED)

    clock.advance(1000)  # long past every deadline: nobody else is called
    _, url = await _late_click(bot, escalation)
    [late] = await bot.slack.wait_for_response(url)
    assert "already over" in late["text"]
    await bot.settle()
    assert dialled(bot) == [ALICE]


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_stop_click_delivered_twice_stops_it_and_says_nothing_more(
    bot_factory: BotFactory, mode: str
) -> None:
    # One click reaching the bot twice (a Socket Mode envelope again after a reconnect, a proxy
    # resending, a copy on each replica): the copy must not tell the person who stopped the
    # escalation that it "is already over; there is nothing to stop".
    bot, _, escalation = await running_escalation(bot_factory, mode)
    url = bot.slack.response_url()
    [(block_id, value)] = [(b.get("block_id"), e["value"]) for b in escalation.blocks or []
                           if b.get("type") == "actions" for e in b["elements"]
                           if e["action_id"] == STOP_ESCALATION_ACTION]
    payload = block_actions_payload(
        action_id=STOP_ESCALATION_ACTION, block_id=block_id, value=value,
        channel_id=escalation.channel, message_ts=escalation.ts,
        message=escalation.to_api(bot.slack.team_id), response_url=url, user_id="U0ADMIN",
    )
    for _ in range(2):
        if bot.mode == "socket":
            await bot.slack.send_envelope("interactive", payload)
        else:
            assert (await bot.post_signed(interactive_body(payload))).status == 200
    await wait_for_state(bot, EscalationState.STOPPED)
    await bot.settle()
    assert "stopped by <@U0ADMIN>." in (escalation.text or "")
    assert [a["text"] for a in bot.slack.responses_to(url)] == []


async def _late_click(bot: BotUnderTest, escalation: Message) -> tuple[Ack, str]:
    """A click on the button as the requester still sees it (their client hadn't refreshed)."""
    stale = as_first_drawn(escalation)
    return await click_stop(bot, stale, user_id="U0LEAD1")


# ------------------------------------------------------------------------------------- restarts


@on_both_databases
async def test_a_restart_mid_chain_carries_on_without_dialling_a_step_twice(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.oncall.escalation_steps")
    first, clock = await start(bot_factory)
    view, message = await open_on_message(first)
    await submit(first, view)
    escalation = await escalation_message(first)
    await first.evo.wait_for_posts(1)
    await wait_for_edit(first, escalation, "🔔 ringing…")
    await first.runtime.stop(grace=5)
    # Paused at its safe point when the stop began, not cancelled when the grace ran out.
    assert any("paused: the bot is stopping" in r.getMessage() for r in caplog.records)

    clock.advance(91)  # Alice's deadline passed while the bot was down
    second, _ = await start(bot_factory, clock=clock)  # the same database
    await second.evo.wait_for_posts(2)
    await wait_for_edit(second, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer")
    assert hung_up(second, session_of(second, ALICE))
    assert dialled(second) == [ALICE, BOB]  # Alice once, Bob once
    await wait_for_edit(second, escalation, "<@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")

    await click_ack(second, await page_of(second, "U0BOB"), user_id="U0BOB")
    await wait_for_edit(second, escalation, "<@U0BOB> acknowledged at")
    await second.settle()
    assert dialled(second) == [ALICE, BOB]
    texts = [m.text or "" for m in posts_in(second, CHANNEL, message.ts)]
    assert sum("*On-call escalation*" in t for t in texts) == 1  # one escalation message, edited


async def test_a_restart_while_dialling_never_dials_that_step_again(
    bot_factory: BotFactory,
) -> None:
    first, clock = await start(bot_factory)
    first.evo.queue_outgoing(Delayed(30))  # Evo Voice takes its time to answer the first call
    view, message = await open_on_message(first)
    await submit(first, view)
    await first.evo.wait_for_posts(1)
    await first.runtime.stop(grace=0.1)  # stopped before the call's answer came back

    clock.advance(91)
    second, _ = await start(bot_factory, clock=clock)
    # The step's call was recorded before its POST: it is looked for, its step ends as
    # unanswered (tests/test_crash_windows.py follows one that turns up), never dialled again.
    escalation = await escalation_message(second)
    await second.evo.wait_for_posts(2)
    assert dialled(second) == [ALICE, BOB]
    assert escalation.thread_ts == message.ts


@on_both_databases
async def test_a_double_submitted_form_starts_one_chain(bot_factory: BotFactory) -> None:
    bot, _ = await start(bot_factory)
    view, message = await open_on_message(bot)
    answers = await asyncio.gather(submit(bot, view), submit(bot, view))
    assert answers == [{}, {}]  # both close the modal
    await submit(bot, view)
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert len(await services(bot).db.fetchall("SELECT id FROM escalations")) == 1
    texts = [m.text or "" for m in posts_in(bot, CHANNEL, message.ts)]
    assert sum("*On-call escalation*" in t for t in texts) == 1
    assert dialled(bot) == [ALICE]


async def test_from_a_message_the_bot_cannot_post_under_the_shortcuts_response_url_tells(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory)
    view, _ = await open_on_message(bot)
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == CHANNEL)
    await submit(bot, view)
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    told = [r for answers in bot.slack.responses.values() for r in answers
            if "I could not post the on-call escalation" in str(r.get("text"))]
    assert len(told) == 1  # in the channel, to the requester, as the shortcut allows
    assert bot.slack.channel_messages("U0ADMIN") == []  # not a direct message
    rows = await services(bot).db.fetchall("SELECT origin FROM escalations")
    assert [r["origin"] for r in rows] == ["message_shortcut"]


async def test_where_the_bot_cannot_post_the_escalation_goes_on_and_the_requester_is_told(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory)
    view = await open_global(bot)
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    await submit(bot, view, reason="x", channel="G0PRIV")
    await bot.evo.wait_for_posts(1)
    assert dialled(bot) == [ALICE]  # Slack refusing the card stops no step
    await bot.settle()
    [dm] = bot.slack.channel_messages("U0ADMIN")  # no response_url from a global shortcut: a DM
    assert "I could not post the on-call escalation in <#G0PRIV>" in (dm.text or "")
    assert await state_of(bot) == EscalationState.RUNNING


async def test_the_broadcast_names_as_tried_only_the_people_called(
    bot_factory: BotFactory,
) -> None:
    # Carol has no usable number: skipped, never called (paged in Slack only). "Tried: @carol" in
    # the channel would tell everyone she was rung and did not come.
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    for person in ("1. <@U0ALICE>", "2. <@U0BOB>", "4. <@U0MANAGER> (escalate_to)"):
        await wait_for_edit(bot, escalation, f"{person} (+1 814 ••• ")
        await wait_for_edit(bot, escalation, "🔔 ringing…")
        clock.advance(91)
    loud = str((await wait_for_post(bot, "Nobody acknowledged the on-call escalation"))
               .params["text"])
    assert "Tried: <@U0ALICE>, <@U0BOB>, <@U0MANAGER>." in loud, loud
    assert "Not called: <@U0CAROL> (no usable phone number)." in loud, loud


async def test_when_nobody_could_be_called_the_end_does_not_say_they_were_tried(
    bot_factory: BotFactory,
) -> None:
    # Every number refused by the dialling policy (or missing): nobody was rung (paged in Slack
    # only).
    policy = POLICY + '[oncall]\nflow = "Escalation"\nrotation = ["U0CAROL", "U0DAVE"]\n'
    bot, _ = await start(bot_factory, policy=policy)
    view, message = await open_on_message(bot)
    await submit(bot, view)
    loud = str((await wait_for_post(bot, "on-call escalation")).params["text"])
    while "*On-call escalation*" in loud:  # the card; the broadcast is the post after it
        loud = str((await bot.slack.wait_for_call(
            "chat.postMessage", lambda c: c.params.get("reply_broadcast") in (True, "true", "1"),
            timeout=10.0)).params["text"])
    assert "Tried:" not in loud and "Nobody acknowledged" not in loud, loud
    assert "Nobody could be called" in loud and "usable phone number" in loud, loud
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "nobody could be called")
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_when_evo_voice_refuses_every_step_the_end_does_not_say_they_were_tried(
    bot_factory: BotFactory,
) -> None:
    # The bot's Evo Voice login lost its role: every step's call is refused at once, nobody is
    # rung. "Nobody acknowledged … Tried: everyone" would say they were called and didn't come.
    bot, _ = await start(bot_factory)
    bot.evo.default_behaviours[("POST", "/sessions/outgoing")] = ErrorStatus(403, "Invalid Role")
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    loud = str((await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.params.get("reply_broadcast") in (True, "true", "1"),
        timeout=10.0)).params["text"])
    assert "Tried:" not in loud and "Nobody acknowledged" not in loud, loud
    assert "Nobody could be called" in loud and "<@U0ALICE>" in loud, loud
    assert "couldn't be called" in loud and "usable phone number" in loud, loud  # Carol
    await wait_for_edit(bot, await escalation_message(bot), "nobody could be called")


async def test_a_long_order_in_the_form_ends_with_how_many_more_not_cut_mid_name(
    bot_factory: BotFactory,
) -> None:
    """60 people after the first, none with a number: the form's "Then:" line would run past
    Slack's 3,000 characters, and a cut would take the last ones (escalate_to) away unsaid."""
    people = ", ".join(f'"U0P{n:03d}"' for n in range(60))
    policy = ROSTER.replace('rotation = ["U0ALICE", "U0BOB", "U0CAROL"]',
                            f'rotation = ["U0ALICE", {people}]')
    bot, _ = await start(bot_factory, policy=policy)
    view, _ = await open_on_message(bot)
    then = next(b for b in view.versions[-1]["blocks"]
                if b["type"] == "context" and "Then:" in b["elements"][0]["text"])
    text = then["elements"][0]["text"]
    assert len(text) <= 3000
    assert re.search(r" and \d+ more\.$", text), text[-200:]
    assert "…" not in text


async def test_the_end_of_a_long_order_still_says_what_to_do(bot_factory: BotFactory) -> None:
    """100 people, none with a usable number: "Nobody could be called" names them all, and the
    broadcast's section would be cut before what to do now."""
    people = ", ".join(f'"U0P{n:03d}"' for n in range(100))
    policy = ALICE_ONLY.replace('rotation = ["U0ALICE"]', f"rotation = [{people}]")
    bot, _ = await start(bot_factory, policy=policy)
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    loud = await wait_for_post(bot, "Nobody could be called", timeout=30)
    blocks = loud.params["blocks"]
    shown = (json.loads(blocks) if isinstance(blocks, str) else blocks)[0]["text"]["text"]
    assert shown.endswith("or escalate again once that is fixed."), shown[-200:]
    assert re.search(r" and \d+ more\. Nobody is known", shown)
