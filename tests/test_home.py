"""The App Home tab end to end in both modes: who is on call now and next (in the viewer's own time
zone), the viewer's recent pages and calls, and the buttons that open the forms."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sqlite3
from typing import Any

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.oncall.home_views import HOME_ACTIONS_BLOCK, HOME_CALL_ACTION, HOME_ESCALATE_ACTION
from bot.standins.evovoice import ErrorStatus, EvoVoiceStandIn
from bot.standins.slack import (
    block_actions_payload,
    interactive_body,
    sign,
    slash_command_body,
)
from tests.conftest import POLICY_NO_REPEAT_QUESTION, SIGNING_SECRET, BotFactory, BotUnderTest
from tests.follow_helpers import (
    FAST,
    FULL,
    MASKED,
    OTHER,
    end_session,
    services,
    status_message,
    wait_for_edit,
)
from tests.escalations import (
    IN_ALICES_SHIFT,
    ROSTER,
    click_ack,
    escalation_message,
    open_on_message,
    page_of,
    start,
    submit,
    wait_for_state,
)


async def open_home(bot: BotUnderTest, user_id: str) -> dict[str, Any]:
    before = len([c for c in bot.slack.calls_to("views.publish")
                  if c.params.get("user_id") == user_id])
    await send_app_home_opened(bot, user_id, "home", event_id=f"Ev{user_id}{before}")
    published = (await bot.slack.wait_for_calls(
        "views.publish", before + 1, lambda c: c.params.get("user_id") == user_id))[-1]
    assert published.ok, published.brief()
    return bot.slack.home_views[user_id].view


async def send_app_home_opened(bot: BotUnderTest, user_id: str, tab: str, *,
                               event_id: str) -> None:
    """Slack's `app_home_opened`: `user_id` opened the app's `tab` ("home" or "messages")."""
    event = {"type": "app_home_opened", "user": user_id, "channel": "D" + user_id[1:],
             "tab": tab, "event_ts": "1700000000.000100"}
    payload = {"type": "event_callback", "team_id": bot.slack.team_id, "api_app_id": "A0APP",
               "event": event, "event_id": event_id, "event_time": 1700000000}
    if bot.mode == "socket":
        await bot.slack.send_envelope("events_api", payload)
    else:
        body = json.dumps(payload).encode()
        headers = {**sign(body, SIGNING_SECRET), "Content-Type": "application/json"}
        async with bot.http.post(bot.events_url, data=body, headers=headers) as response:
            assert response.status == 200


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_home_tab_shows_who_is_on_call_and_my_pages(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await page_of(bot, "U0ALICE")  # her step has begun
    await bot.settle()

    home = json.dumps(await open_home(bot, "U0ALICE"), ensure_ascii=False)
    assert "*On call now:* <@U0ALICE> · +1 814 ••• 3093 · until <!date^" in home
    assert "*Next:* <@U0BOB>" in home
    assert "<@U0ADMIN> escalated in <#C0OPS> · 📞 going on" in home  # her page
    assert HOME_ESCALATE_ACTION in home and HOME_CALL_ACTION not in home  # no role: no calls

    admin = json.dumps(await open_home(bot, "U0ADMIN"), ensure_ascii=False)
    assert "You escalated in <#C0OPS>" in admin and HOME_CALL_ACTION in admin
    assert "Your recent calls" in admin and "+1 814 ••• 3093" in admin

    bob = json.dumps(await open_home(bot, "U0BOB"), ensure_ascii=False)  # next, not paged yet
    assert "*Next:* " in bob and "escalated in" not in bob  # pages are their own people's

    bot.slack.users["U0GUEST"] = {"is_restricted": True}
    guest = json.dumps(await open_home(bot, "U0GUEST"), ensure_ascii=False)
    assert "On call now" not in guest and HOME_ESCALATE_ACTION not in guest
    assert "No on-call rotation is set up" not in guest  # there is one: they may not see it
    assert "ask an administrator of callbot to add you to [oncall] responders" in guest


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_escalate_button_opens_the_form(bot_factory: BotFactory, mode: str) -> None:
    bot, _ = await start(bot_factory, mode)
    shown = json.dumps(await click_home_button(bot, "U0DEV", HOME_ESCALATE_ACTION),
                       ensure_ascii=False)
    assert "Escalate to on-call" in shown and "Post the escalation in" in shown


async def test_my_recent_calls_are_mine_alone(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command("+18144043093 escalation", user_id="U0MANAGER")
    await bot.command("+18144043094 escalation", user_id="U0ADMIN")
    await bot.settle()
    admin = json.dumps(await open_home(bot, "U0ADMIN"), ensure_ascii=False)
    assert "Your recent calls" in admin and "+1 814 ••• 3094" in admin
    assert "+1 814 ••• 3093" not in admin  # the Manager's call is theirs to see
    assert "· 📞 placed, in progress" in admin  # what dialling did, not only that it was allowed


async def click_home_button(bot: BotUnderTest, user_id: str, action_id: str) -> dict[str, Any]:
    """Click a button of `user_id`'s Home tab; the form it opened, as Slack shows it."""
    home = await open_home(bot, user_id)
    [button] = [element for block in home["blocks"] if block.get("block_id") == HOME_ACTIONS_BLOCK
                for element in block["elements"] if element["action_id"] == action_id]
    before = len(bot.slack.calls_to("views.open"))
    payload = block_actions_payload(
        action_id=action_id, block_id=HOME_ACTIONS_BLOCK, value=button["value"],
        view={**home, "id": bot.slack.home_views[user_id].id}, user_id=user_id,
        trigger_id=bot.slack.new_trigger_id(),
    )
    if bot.mode == "socket":
        await bot.slack.send_envelope("interactive", payload)
    else:
        await bot.post_signed(interactive_body(payload))
    opened = (await bot.slack.wait_for_calls("views.open", before + 1))[-1]
    assert opened.ok, opened.brief()
    shown: dict[str, Any] = bot.slack.views[opened.response["view"]["id"]].versions[-1]
    return shown


async def test_the_place_a_call_button_opens_the_call_form(bot_factory: BotFactory) -> None:
    bot, _ = await start(bot_factory, "http")
    shown = json.dumps(await click_home_button(bot, "U0MANAGER", HOME_CALL_ACTION),
                       ensure_ascii=False)
    assert "Place a call" in shown and "Escalate to on-call" not in shown


async def test_without_a_rotation_the_home_tab_says_so_and_offers_no_escalation(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")  # no [oncall] section
    home = json.dumps(await open_home(bot, "U0MANAGER"), ensure_ascii=False)
    assert "No on-call rotation is set up." in home and "On call now" not in home
    assert HOME_ESCALATE_ACTION not in home and HOME_CALL_ACTION in home


async def test_an_acknowledged_page_says_who_acknowledged_it(bot_factory: BotFactory) -> None:
    bot, _ = await start(bot_factory, "http")
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await click_ack(bot, await page_of(bot, "U0ALICE"), user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await bot.settle()
    alice = json.dumps(await open_home(bot, "U0ALICE"), ensure_ascii=False)
    assert "<@U0ADMIN> escalated in <#C0OPS> · ✅ acknowledged by you" in alice
    admin = json.dumps(await open_home(bot, "U0ADMIN"), ensure_ascii=False)
    assert "You escalated in <#C0OPS> · ✅ acknowledged by <@U0ALICE>" in admin


async def test_a_failing_database_never_leaves_an_old_roster_on_the_tab(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slack keeps showing a Home tab until it is published again: a tab left undrawn would go on
    # saying Alice is on call after the hand-off to Bob.
    bot, _ = await start(bot_factory, "http")
    first = json.dumps(await open_home(bot, "U0ADMIN"), ensure_ascii=False)
    assert "*On call now:* <@U0ALICE>" in first

    services(bot).oncall.clock = lambda: IN_ALICES_SHIFT + dt.timedelta(days=7)  # Bob's week
    fail_reads(bot, monkeypatch)
    again = json.dumps(await open_home(bot, "U0ADMIN"), ensure_ascii=False)
    assert "<@U0ALICE>" not in again and "None yet." not in again
    assert "database isn't answering" in again and "Open this tab again in a minute" in again
    assert HOME_ESCALATE_ACTION in again and HOME_CALL_ACTION in again  # the forms check again


async def test_a_failing_database_without_a_rotation_offers_no_escalation(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await bot_factory("http")  # no [oncall] section: only the calls are read
    fail_reads(bot, monkeypatch)
    home = json.dumps(await open_home(bot, "U0MANAGER"), ensure_ascii=False)
    assert "database isn't answering" in home and "None yet." not in home
    assert HOME_ESCALATE_ACTION not in home and HOME_CALL_ACTION in home


def fail_reads(bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of the bot's database fails, as SQLite's do when the disk fails."""

    async def failing(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(services(bot).db, "fetchone", failing)
    monkeypatch.setattr(services(bot).db, "fetchall", failing)


async def test_a_user_group_slack_wont_list_still_draws_the_tab(bot_factory: BotFactory) -> None:
    # U0LEAD1's role comes through a user group: while Slack won't list it, the tab is drawn
    # without what the role grants, and still shows who is on call to a full member.
    bot, _ = await start(bot_factory, "http")
    bot.slack.fail("usergroups.users.list", "missing_scope")
    home = json.dumps(await open_home(bot, "U0LEAD1"), ensure_ascii=False)
    assert "*On call now:* <@U0ALICE>" in home and HOME_ESCALATE_ACTION in home
    assert HOME_CALL_ACTION not in home and "Your recent calls" not in home


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_opening_the_messages_tab_leaves_the_home_tab_alone(
    bot_factory: BotFactory, mode: str
) -> None:
    # Pages arrive in the Messages tab: opening it (every page read) must not redraw the Home
    # tab, each redraw asking Slack and the database again.
    bot, _ = await start(bot_factory, mode)
    await send_app_home_opened(bot, "U0ALICE", "messages", event_id="EvMessages")
    await open_home(bot, "U0ALICE")
    await bot.settle()
    assert len(bot.slack.calls_to("views.publish")) == 1



async def test_an_override_before_the_rotation_begins_is_shown_until_its_first_handoff(
    bot_factory: BotFactory,
) -> None:
    # The rotation begins Monday 6 April; the manager covers from the Wednesday before. Their
    # duty ends at that first hand-off (where Alice's first shift begins), not a week later.
    policy = ROSTER.replace('timezone = "America/New_York"',
                            'timezone = "America/New_York"\nstart = 2026-04-06')
    bot, _ = await start(bot_factory, "http", policy=policy,
                         at=dt.datetime(2026, 4, 1, 15, tzinfo=dt.UTC))
    await bot.command("oncall take", user_id="U0MANAGER")
    await bot.settle()
    first_handoff = int(dt.datetime(2026, 4, 6, 13, tzinfo=dt.UTC).timestamp())
    home = json.dumps(await open_home(bot, "U0ADMIN"), ensure_ascii=False)
    assert f"*On call now:* <@U0MANAGER> · +1 814 ••• 3090 · until <!date^{first_handoff}^" in home
    assert f"*Next:* <@U0ALICE> · +1 814 ••• 3093 · from <!date^{first_handoff}^" in home


async def test_a_flow_typed_with_markup_is_shown_as_typed(bot_factory: BotFactory) -> None:
    # A refused call keeps the flow as typed: on the tab it must read as text, not as a link
    # or a mention.
    bot = await bot_factory("http")
    await bot.command("+18144043093 <http://evil.example|Escalation> <!channel>",
                      user_id="U0MANAGER")
    await bot.settle()
    home = json.dumps(await open_home(bot, "U0MANAGER"), ensure_ascii=False)
    assert "“&lt;http://evil.example|Escalation&gt; &lt;!channel&gt;” · 🚫 refused" in home
    assert "<http://evil.example" not in home and "<!channel>" not in home


async def test_a_tab_slack_refuses_is_a_warning_not_a_failed_task(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot, _ = await start(bot_factory, "http")
    bot.slack.fail("views.publish", "not_enabled")  # the App Home is off in the app's settings
    await send_app_home_opened(bot, "U0ALICE", "home", event_id="EvRefused")
    await bot.slack.wait_for_calls("views.publish", 1)
    await bot.settle()
    assert "publishing the home tab for U0ALICE failed (not_enabled)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_slack_connect_managers_recent_calls_are_on_their_tab(
    bot_factory: BotFactory,
) -> None:
    # A Manager of another organisation's team calls from the shared channel: the call is
    # recorded under their own team (T0PARTNER), while the Home tab's event names the host's.
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION)
    await bot.post_signed(slash_command_body(
        text="+18144043093 escalation", user_id="U0LEAD1", team_id="T0PARTNER",
        response_url=bot.slack.response_url(), trigger_id="91.connect"))
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    home = json.dumps(await open_home(bot, "U0LEAD1"), ensure_ascii=False)
    assert "Your recent calls" in home
    assert "+1 814 ••• 3093 · “Escalation”" in home


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_button_click_delivered_twice_opens_the_form_and_says_nothing_more(
    bot_factory: BotFactory, mode: str
) -> None:
    # The same click twice (a Socket Mode envelope again after a reconnect, a proxy resending, two
    # replicas): its trigger_id opens the form once; the copy finds it used. The form is open:
    # "I could not open the call form … Try again" would send the person after nothing.
    bot, _ = await start(bot_factory, mode)
    home = await open_home(bot, "U0MANAGER")
    payload = block_actions_payload(
        action_id=HOME_CALL_ACTION, block_id=HOME_ACTIONS_BLOCK, value="call",
        view={**home, "id": bot.slack.home_views["U0MANAGER"].id}, user_id="U0MANAGER",
        trigger_id=bot.slack.new_trigger_id(),
    )
    for _ in range(2):
        if bot.mode == "socket":
            await bot.slack.send_envelope("interactive", payload)
        else:
            assert (await bot.post_signed(interactive_body(payload))).status == 200
    await bot.slack.wait_for_calls("views.open", 2)
    await bot.settle()
    assert [c.ok for c in bot.slack.calls_to("views.open")].count(True) == 1
    told = [c for method in ("chat.postMessage", "chat.postEphemeral")
            for c in bot.slack.calls_to(method)]
    assert [c.params.get("text") for c in told] == []


async def test_long_flow_names_leave_every_recent_call_and_its_outcome_on_the_tab(
    bot_factory: BotFactory, evo: EvoVoiceStandIn,
) -> None:
    # Evo Voice's flow names are the account's to choose: five calls with a long one, its `&`
    # and `<` written as entities, once ran past the 3,000 characters of the tab's context, which
    # cut it short: the older calls and their outcomes were gone from the tab. Who answered and
    # the outcome are Evo Voice's words too, as long as it likes.
    evo.flows.append({"id": "flow-long", "name": "R&D <db> failover " * 40, "accountId": "acct-1"})
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION, **FAST)
    for n in range(5):
        await bot.command(f"+1814404309{n} flow-long")
        status = await status_message(bot, n + 1)
        [session_id] = list(bot.evo.sessions)[n:]
        bot.evo.set_session_state(session_id, callState="Connected",
                                  answeredByName="Q&A <desk> " * 40)
        await wait_for_edit(bot, status, "Connected")
        end_session(bot, session_id, after_seconds=65, outcome="Done & <dusted> " * 40)
        await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    home = await open_home(bot, "U0MANAGER")
    [calls] = [b for b in home["blocks"] if b["type"] == "context"][-1:]
    shown = calls["elements"][0]["text"].splitlines()
    assert len(shown) == 5
    assert all(line.endswith(", 1m 05s") and "R&amp;D &lt;db&gt;" in line
               and "answered by Q&amp;A &lt;desk&gt;" in line
               and "Done &amp; &lt;dusted&gt;" in line for line in shown)


async def test_a_member_slack_wont_vouch_for_is_not_told_to_ask_to_be_added(
    bot_factory: BotFactory,
) -> None:
    # U0DEV, a full member, is a responder by [oncall] responders = "everyone": while Slack fails
    # to say who they are, the tab told them to ask an administrator to be added, and left out
    # the button they will need at 3 a.m. It says Slack didn't answer, shows nobody as on call
    # (a guest may be the one opening it) and keeps Escalate, whose form checks them again.
    bot, _ = await start(bot_factory, "http")
    bot.slack.fail("users.info", "internal_error")
    home = json.dumps(await open_home(bot, "U0DEV"), ensure_ascii=False)
    assert "add you to [oncall] responders" not in home
    assert "On call now" not in home and "<@U0ALICE>" not in home
    assert "Slack didn't answer" in home and "Open this tab again in a minute" in home
    assert HOME_ESCALATE_ACTION in home and HOME_CALL_ACTION not in home

    bot.slack.off("users.info")  # Slack answers again: the tab is drawn as for any responder
    again = json.dumps(await open_home(bot, "U0DEV"), ensure_ascii=False)
    assert "*On call now:* <@U0ALICE>" in again and "Slack didn't answer" not in again


async def test_a_tab_drawn_before_a_take_never_lands_after_the_one_drawn_since(
    bot_factory: BotFactory,
) -> None:
    # The tab is opened, Slack is slow to take it; the manager takes the shift and the tab is
    # opened again. The first drawing, still on its way, must not land last: the tab would go on
    # saying Alice is on call, the second drawing's truth gone until the next open.
    bot, _ = await start(bot_factory, "http")
    slow = bot.slack.hold("views.publish", when=lambda c: c.params.get("user_id") == "U0ADMIN")
    await send_app_home_opened(bot, "U0ADMIN", "home", event_id="EvBeforeTake")
    await slow.wait_until_held()
    slow.when = lambda c: False  # Slack is quick again: only the first drawing is held
    await bot.command("oncall take", user_id="U0MANAGER")
    await bot.slack.wait_for_call("chat.postMessage", lambda c: "📟" in str(c.params.get("text")))
    await send_app_home_opened(bot, "U0ADMIN", "home", event_id="EvAfterTake")
    with contextlib.suppress(AssertionError):  # drawn at once, or waiting for the first
        await bot.slack.wait_for_call("views.publish", timeout=1.0)
    slow.open()
    await bot.settle()
    home = json.dumps(bot.slack.home_views["U0ADMIN"].view, ensure_ascii=False)
    assert "*On call now:* <@U0MANAGER>" in home


async def test_my_recent_calls_say_how_each_ended_as_the_status_message_did(
    bot_factory: BotFactory,
) -> None:
    # The tab once said only "placed" for every call dialled: whether it was picked up, not
    # answered or is still ringing, the requester had to open the thread or `/call history`.
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION, **FAST)
    await bot.command(f"{FULL} escalation")  # picked up
    status = await status_message(bot)
    [picked_up] = bot.evo.sessions
    bot.evo.set_session_state(picked_up, callState="Connected")
    await wait_for_edit(bot, status, "Connected")
    end_session(bot, picked_up, after_seconds=65, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")
    await bot.command(f"{FULL} escalation")  # not answered
    status = await status_message(bot, 2)
    [not_answered] = [s for s in bot.evo.sessions if s != picked_up]
    end_session(bot, not_answered, after_seconds=30, outcome="NoAnswer")
    await wait_for_edit(bot, status, "Ended")
    bot.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    await bot.command(f"{FULL} escalation")  # not placed
    await bot.command(f"{FULL} escalation")  # still ringing
    await bot.evo.wait_for_posts(4)
    await bot.settle()

    home = await open_home(bot, "U0MANAGER")
    [calls] = [b for b in home["blocks"] if b["type"] == "context"][-1:]
    shown = calls["elements"][0]["text"].splitlines()
    assert [line.split(" · ", 3)[3] for line in shown] == [
        "📞 placed, in progress",  # never ✅ before the outcome is known
        "❌ not placed (BadRequest:400)",
        "❌ not answered, NoAnswer, 30 s",
        "☎️ picked up (a person or a voicemail), Completed, 1m 05s",
    ]
    assert all(MASKED in line and FULL not in line for line in shown)


async def test_my_recent_calls_mark_the_calls_my_escalation_made(bot_factory: BotFactory) -> None:
    # An escalation's steps are recorded as its requester's calls: on their tab the call that
    # rang Alice read as if they had dialled her themselves, beside the calls they did make.
    bot, _ = await start(bot_factory, "http")
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await bot.evo.wait_for_posts(1)
    await bot.command(f"{OTHER} escalation", user_id="U0ADMIN")
    await bot.evo.wait_for_posts(2)
    await bot.settle()
    home = await open_home(bot, "U0ADMIN")
    [calls] = [b for b in home["blocks"] if b["type"] == "context"][-1:]
    mine, alices = calls["elements"][0]["text"].splitlines()
    assert " · 🚨 escalation step · " + MASKED + " · " in alices
    assert "escalation step" not in mine and "+1 814 ••• 1234" in mine
