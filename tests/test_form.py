"""The call form end to end: `/call` alone (or the "Place a call" shortcut) opens a modal, its flow
menu searches the account's flows, its submission is checked in the ack and dials exactly once."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from bot.calls import form as forms
from bot.calls.form import FormField
from bot.evovoice.catalog import rank_flows
from bot.evovoice.client import Flow
from bot.listeners import call_form as form_listener
from bot.slack.modals import ModalMetadata, field_errors
from bot.standins.evovoice import ErrorStatus
from bot.standins.slack import (
    ApiCall,
    block_suggestion_payload,
)
from tests.budget_clock import LeapingClock
from tests.conftest import POLICY_NO_REPEAT_QUESTION, BotFactory, BotUnderTest, manifest
from tests.interactions import (
    interact, open_form, open_from_shortcut, send_call, state, submission,
)

FULL = "+18144043093"
MASKED = "+1 814 ••• 3093"


# ------------------------------------------------------------------------------------- helpers


def block(view: dict[str, Any], field: FormField) -> dict[str, Any] | None:
    return next((b for b in view["blocks"] if b.get("block_id") == field), None)


async def options_for(bot: BotUnderTest, text: str, user_id: str = "U0MANAGER") -> list[str]:
    answer = await interact(bot, block_suggestion_payload(
        action_id=FormField.FLOW, block_id=FormField.FLOW, value=text, user_id=user_id))
    return [option["value"] for option in answer["options"]]


def parents(bot: BotUnderTest) -> list[ApiCall]:
    return [c for c in bot.slack.calls_to("chat.postMessage")
            if "thread_ts" not in c.params and c.ok]


# ------------------------------------------------------------------------------------- opening


async def test_call_alone_opens_the_form_with_the_trigger(bot: BotUnderTest) -> None:
    view = await open_form(bot)
    posted = view.versions[-1]
    assert posted["callback_id"] == forms.CALL_FORM_CALLBACK_ID
    assert posted["submit"]["text"] == "Call"
    assert [b["block_id"] for b in posted["blocks"] if b["type"] == "input"] == [
        FormField.NUMBER, FormField.FLOW, FormField.CALLER_ID, FormField.REASON
    ]
    number = block(posted, FormField.NUMBER)
    assert number is not None and "initial_value" not in number["element"]
    assert "(814) 404-3093" in number["hint"]["text"]  # accepted formats
    assert "Calls may go to the United States (US), Canada (CA)." in number["hint"]["text"]
    flow = block(posted, FormField.FLOW)
    assert flow is not None and flow["element"]["type"] == "external_select"
    caller = block(posted, FormField.CALLER_ID)
    assert caller is not None and caller["optional"] is True
    assert caller["element"]["initial_option"]["value"] == "+18145550100"
    assert [o["value"] for o in caller["element"]["options"]] == ["+18145550100", "+18145550101"]
    assert json.loads(posted["private_metadata"])["channel"] == "C0OPS"
    assert "<#C0OPS>" in json.dumps(posted["blocks"])
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_number_without_a_flow_prefills_the_form(bot: BotUnderTest) -> None:
    view = await open_form(bot, FULL)
    number = block(view.versions[-1], FormField.NUMBER)
    assert number is not None and number["element"]["initial_value"] == FULL
    # Room for a number as people write it, extension and all (which the check then refuses).
    assert number["element"]["max_length"] >= len("+1 (814) 404-3093 ext. 1234")


async def test_a_user_without_a_role_gets_a_notice_instead_of_the_form(bot: BotUnderTest) -> None:
    view = await open_form(bot, user_id="U0INTRUDER")
    posted = view.versions[-1]
    assert "submit" not in posted
    assert posted["close"]["text"] == "Close"  # nothing to cancel
    assert "Manager" in json.dumps(posted["blocks"])


async def test_a_group_lookup_failing_at_open_gets_a_notice_saying_why(bot: BotUnderTest) -> None:
    bot.slack.fail("usergroups.users.list", "missing_scope")
    view = await open_form(bot, user_id="U0LEAD1")  # a Manager through user group S0LEADS
    posted = view.versions[-1]
    assert "submit" not in posted
    assert "usergroups:read" in json.dumps(posted["blocks"])


async def test_slow_data_opens_a_loading_view_then_the_form(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(form_listener, "OPEN_BUDGET_SECONDS", 0.05)
    bot = await bot_factory("http")
    release = bot.slack.hold("usergroups.users.list")
    view = await open_from_shortcut(bot, user_id="U0LEAD1", ready=False)
    assert "submit" not in view.versions[0]  # the loading view, opened within the trigger's life
    release.open()
    update = await bot.slack.wait_for_call("views.update")
    assert update.ok and update.params["view_id"] == view.id
    assert block(view.versions[-1], FormField.FLOW) is not None


async def test_data_ready_while_the_loading_view_opens_still_replaces_it(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(form_listener, "OPEN_BUDGET_SECONDS", 0.05)
    bot = await bot_factory("http")
    groups_answered = asyncio.Event()

    async def slow_groups(call: ApiCall) -> None:
        await groups_answered.wait()

    async def slow_open(call: ApiCall) -> None:
        # The role check finishes while views.open (of the loading view) is still on its way.
        groups_answered.set()
        await bot.slack.wait_for_call("usergroups.users.list")
        await asyncio.sleep(0.2)

    bot.slack.on("usergroups.users.list", slow_groups)
    bot.slack.on("views.open", slow_open)
    view = await open_from_shortcut(bot, user_id="U0LEAD1", ready=False)
    assert "submit" not in view.versions[0]
    await bot.settle()
    assert block(view.versions[-1], FormField.FLOW) is not None


@pytest.mark.parametrize("retry_meets", ["exchanged_trigger_id", "duplicate_external_id"])
async def test_a_loading_view_whose_answer_was_lost_is_still_replaced_by_the_form(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch, retry_meets: str,
) -> None:
    # Slack opens the loading view and the connection drops before its answer comes: the
    # client's one retry (views.open posts nothing) meets the trigger spent, or the view's
    # external id taken (which Slack checks first, its documentation doesn't say). Without the
    # view's id, the loading view stayed up for good; the form replaces it all the same.
    monkeypatch.setattr(form_listener, "OPEN_BUDGET_SECONDS", 0.05)
    # The retry's pause (a second or so) on a clock that leaps: how long it is is no business here.
    bot = await bot_factory("http", slack_sleep=LeapingClock().sleep)
    release = bot.slack.hold("usergroups.users.list")
    bot.slack.cut("views.open")
    if retry_meets == "duplicate_external_id":
        bot.slack.fail("views.open", retry_meets, times=1,
                       when=lambda _: len(bot.slack.calls_to("views.open")) == 1)
    url = bot.slack.response_url()
    view = await open_form(bot, user_id="U0LEAD1", response_url=url, ready=False)
    assert "submit" not in view.versions[-1]  # the loading view
    await bot.slack.wait_for_call("views.open", lambda c: c.response is not None
                                  and c.response.get("error") == retry_meets)
    release.open()
    await bot.settle()
    assert block(view.versions[-1], FormField.FLOW) is not None
    assert bot.slack.responses_to(url) == []  # never told it could not open


@pytest.mark.parametrize("opened", [True, False])
async def test_a_loading_view_slack_gave_no_answer_for_is_replaced_or_its_absence_told(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch, opened: bool,
) -> None:
    # No answer to views.open in time: Slack may have opened the loading view (replaced by its
    # name, nothing more said) or not (not found by it: the person is told, as when views.open
    # fails). They were told "could not open" even with the loading view up for good.
    monkeypatch.setattr(form_listener, "OPEN_BUDGET_SECONDS", 0.05)
    bot = await bot_factory("http", slack_timeout=0.3)
    release = bot.slack.hold("usergroups.users.list")
    answer = bot.slack.hold("views.open", after=opened)  # carried out (opened), or not yet
    url = bot.slack.response_url()
    await send_call(bot, "", trigger_id=bot.slack.new_trigger_id(), user_id="U0LEAD1",
                    response_url=url)
    await answer.wait_until_held(1)
    release.open()
    if opened:
        await bot.slack.wait_for_call("views.update")
        await bot.settle()
        [view] = bot.slack.views.values()
        assert block(view.versions[-1], FormField.FLOW) is not None
        assert bot.slack.responses_to(url) == []
    else:
        [told] = await bot.slack.wait_for_response(url)
        assert "could not open the call form (TimeoutError)" in told["text"]
        assert bot.slack.views == {}


async def test_when_the_loading_view_cannot_be_replaced_the_user_is_told(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slack refusing views.update (its own trouble, not the user closing the modal) left the
    # loading view up for good, with nothing said: as when views.open fails, the user is told.
    monkeypatch.setattr(form_listener, "OPEN_BUDGET_SECONDS", 0.05)
    bot = await bot_factory("http")
    release = bot.slack.hold("usergroups.users.list")
    bot.slack.fail("views.update", "internal_error")
    url = bot.slack.response_url()
    view = await open_form(bot, user_id="U0LEAD1", response_url=url, ready=False)
    assert "submit" not in view.versions[-1]  # the loading view
    release.open()
    await bot.slack.wait_for_call("views.update")
    [answer] = await bot.slack.wait_for_response(url)
    assert "could not open the call form (internal_error)" in answer["text"]
    assert answer["response_type"] == "ephemeral"


async def test_when_the_form_cannot_be_opened_the_user_is_told(bot: BotUnderTest) -> None:
    bot.slack.fail("views.open", "expired_trigger_id")
    _, url = await bot.command("")
    [answer] = await bot.slack.wait_for_response(url)
    assert "could not open the call form" in answer["text"]
    assert answer["response_type"] == "ephemeral"


async def test_the_global_shortcut_opens_the_form_asking_for_a_channel(bot: BotUnderTest) -> None:
    view = await open_from_shortcut(bot)
    posted = view.versions[-1]
    channel = block(posted, FormField.CHANNEL)
    assert channel is not None
    assert channel["element"]["type"] == "conversations_select"
    assert channel["element"]["default_to_current_conversation"] is True
    assert channel["element"]["response_url_enabled"] is True
    assert json.loads(posted["private_metadata"] or "{}").get("channel") is None


async def test_when_the_numbers_cannot_be_read_the_form_opens_without_the_caller_id(
    bot: BotUnderTest,
) -> None:
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    bot.evo.queue("GET", "/endpoints", ErrorStatus(500))
    view = await open_form(bot)
    await bot.settle()
    posted = view.versions[-1]
    assert posted.get("submit", {}).get("text") == "Call"  # the form, not a notice
    assert [b["block_id"] for b in posted["blocks"] if b["type"] == "input"] == [
        FormField.NUMBER, FormField.FLOW, FormField.REASON
    ]


# ------------------------------------------------------------------------------------- options


async def test_the_flow_menu_searches_by_name_and_slug(bot: BotUnderTest) -> None:
    assert await options_for(bot, "") == ["flow-daily", "flow-esc", "flow-page", "flow-wake"]
    assert await options_for(bot, "wake-up") == ["flow-wake"]
    assert await options_for(bot, "CALL") == ["flow-wake"]
    assert await options_for(bot, "page") == ["flow-page"]  # the policy's alias, and the name
    assert await options_for(bot, "zzz") == []


async def test_the_flow_menu_ranks_prefix_before_substring_and_stops_at_100(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    bot.evo.flows[:] = [
        {"id": "flow-de", "name": "Deescalate", "accountId": "acct-1"},
        {"id": "flow-team", "name": "Team Escalation", "accountId": "acct-1"},
        {"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"},
        {"id": "flow-long", "name": "Escalation " + "x" * 100, "accountId": "acct-1"},
    ] + [{"id": f"flow-{i}", "name": f"Rota {i:03}", "accountId": "acct-1"} for i in range(150)]
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    assert await options_for(bot, "esc") == ["flow-esc", "flow-long", "flow-team", "flow-de"]
    assert await options_for(bot, "escalation") == ["flow-esc", "flow-long", "flow-team"]
    answer = await interact(bot, block_suggestion_payload(
        action_id=FormField.FLOW, block_id=FormField.FLOW, value=""))
    assert len(answer["options"]) == 100
    assert all(len(o["text"]["text"]) <= 75 for o in answer["options"])


async def test_long_flow_names_with_a_less_than_sign_stay_apart_in_the_menu(
    bot: BotUnderTest,
) -> None:
    # An option's text is plain text: a `<` in it is no markup to keep whole. Shortened as if it
    # were, both names were cut back to the `<` ("CPU…"), two flows the person could not tell
    # apart, one of which calls the wrong team.
    bot.evo.flows[:] = [
        {"id": f"flow-{side}", "accountId": "acct-1",
         "name": f"CPU < 10% idle on the {side} cluster: page the database team's on-call DBA now"}
        for side in ("east", "west")
    ]
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    answer = await interact(bot, block_suggestion_payload(
        action_id=FormField.FLOW, block_id=FormField.FLOW, value="cpu"))
    shown = {o["value"]: o["text"]["text"] for o in answer["options"]}
    assert all(len(text) <= 75 for text in shown.values())
    assert "east cluster" in shown["flow-east"] and "west cluster" in shown["flow-west"]


async def test_flows_with_the_same_name_can_be_told_apart_in_the_menu(
    bot_factory: BotFactory,
) -> None:
    # Two flows both named "Escalation" (one per team, say) showed as two identical options: the
    # person picked one blind, and the call could go to the wrong team. /call refuses that name
    # as ambiguous; the menu now shows each with its ID, which an alias in [flows] would name.
    bot = await bot_factory("http")
    bot.evo.flows[:] = [
        {"id": "flow-a", "name": "Escalation", "accountId": "acct-1"},
        {"id": "flow-b", "name": "escalation", "accountId": "acct-1"},
        {"id": "flow-long", "accountId": "acct-1", "name": "Page the on-call DBA " + "x" * 80},
        {"id": "flow-long2", "accountId": "acct-1", "name": "Page the on-call DBA " + "x" * 80},
        {"id": "flow-wake", "name": "Wake Up Call", "accountId": "acct-1"},
    ] + [{"id": f"flow-{i}", "name": f"Escalation {i:03}", "accountId": "acct-1"}
         for i in range(120)]
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    for query in ("", "escalation", "page"):
        answer = await interact(bot, block_suggestion_payload(
            action_id=FormField.FLOW, block_id=FormField.FLOW, value=query))
        texts = [o["text"]["text"] for o in answer["options"]]
        assert len(set(map(str.casefold, texts))) == len(texts), texts
        assert all(len(text) <= 75 for text in texts)
    answer = await interact(bot, block_suggestion_payload(
        action_id=FormField.FLOW, block_id=FormField.FLOW, value="escalation"))
    shown = {o["value"]: o["text"]["text"] for o in answer["options"]}
    assert "flow-a" in shown["flow-a"] and "flow-b" in shown["flow-b"]
    assert shown["flow-7"] == "Escalation 007"  # a name of its own is shown as it is


async def test_the_flow_menu_is_empty_for_a_user_without_a_role(bot: BotUnderTest) -> None:
    assert await options_for(bot, "", user_id="U0INTRUDER") == []


async def test_the_flow_menu_is_empty_not_an_error_when_evo_voice_fails(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    bot.evo.queue("GET", "/flows", *[ErrorStatus(500)] * 3)
    assert await options_for(bot, "esc") == []  # an empty menu, not an error


# ------------------------------------------------------------------------------------- submitting


async def test_a_valid_form_places_one_call_with_the_reason_in_the_thread(
    bot: BotUnderTest,
) -> None:
    view = await open_form(bot, FULL)
    answer = await interact(bot, submission(
        view, state(flow="flow-wake", caller_id="+18145550101", reason="INC-42 <!channel>")))
    assert answer.get("response_action") in (None, "clear")
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json == {"flowId": "flow-wake", "numberToDial": FULL, "callerId": "+18145550101"}
    [parent] = parents(bot)
    assert parent.params["channel"] == "C0OPS"
    assert MASKED in parent.params["text"] and "Wake Up Call" in parent.params["text"]
    assert "INC-42 &lt;!channel&gt;" in parent.params["text"]  # the reason, escaped
    [reply] = bot.slack.thread("C0OPS", parent.response["ts"])  # type: ignore[index]
    assert "Call placed" in (reply.text or "")


async def test_a_number_typed_in_full_width_digits_in_the_form_is_dialled(
    bot: BotUnderTest,
) -> None:
    view = await open_form(bot)
    answer = await interact(bot, submission(
        view, state(number="＋１　８１４　４０４　３０９３", reason="障害 ＩＮＣ－４２")))
    assert answer.get("response_action") in (None, "clear"), answer
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json["numberToDial"] == FULL
    [parent] = parents(bot)
    assert MASKED in parent.params["text"]
    assert "障害 ＩＮＣ－４２" in parent.params["text"]  # the reason is shown as it was typed


async def test_a_number_pasted_with_no_break_spaces_is_dialled(bot: BotUnderTest) -> None:
    # Copied from a web page or an e-mail signature, whose numbers keep together with U+00A0.
    view = await open_form(bot)
    answer = await interact(bot, submission(view, state(number="+1\u00a0814\u00a0404\u00a03093")))
    assert answer.get("response_action") in (None, "clear"), answer
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json["numberToDial"] == FULL


async def test_no_caller_id_chosen_uses_the_default(bot: BotUnderTest) -> None:
    view = await open_form(bot)
    caller = block(view.versions[-1], FormField.CALLER_ID)
    assert caller is not None and "also used when left empty" in caller["hint"]["text"]
    await interact(bot, submission(view, state(caller_id=None)))
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json["callerId"] == "+18145550100"


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        (state(number="+1 900 555 0123"), FormField.NUMBER, "premium"),
        (state(number="+44 20 7946 0018"), FormField.NUMBER, "GB"),
        (state(number=None), FormField.NUMBER, "No phone number"),
        (state(number="+18144043093 x12"), FormField.NUMBER, "xtension"),
        (state(flow=None), FormField.FLOW, "Choose a flow"),
        (state(flow="flow-deleted"), FormField.FLOW, "no longer in the Evo Voice account"),
        (state(caller_id="+18145550199"), FormField.CALLER_ID, "not one of the account's"),
        (state(caller_id="not a number"), FormField.CALLER_ID, "from the list"),
    ],
)
async def test_each_invalid_field_gets_its_error_and_nothing_is_dialled(
    bot_factory: BotFactory, values: dict[str, Any], field: FormField, expected: str
) -> None:
    bot = await bot_factory("http")
    view = await open_form(bot)
    answer = await interact(bot, submission(view, values))
    assert answer["response_action"] == "errors"
    assert list(answer["errors"]) == [field]
    assert expected in answer["errors"][field]
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    assert parents(bot) == []


async def test_a_flow_deleted_while_the_form_was_open_is_named_and_asked_for_again(
    bot: BotUnderTest,
) -> None:
    # The refusal read "No flow is called “flow-wake”. … Use a flow's name or its slug": the
    # flow's ID, which the person never typed, and advice for /call. It now names the flow chosen.
    view = await open_form(bot)
    bot.evo.flows[:] = [f for f in bot.evo.flows if f["id"] != "flow-wake"]
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    values = state(flow="flow-wake")
    values[FormField.FLOW][FormField.FLOW]["selected_option"]["text"]["text"] = "Wake Up Call"
    answer = await interact(bot, submission(view, values))
    assert answer["response_action"] == "errors"
    assert answer["errors"] == {FormField.FLOW: (
        "The flow chosen, “Wake Up Call”, is no longer in the Evo Voice account; nothing was "
        "dialled. Choose another.")}
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_form_for_an_account_without_flows_says_so_under_the_flow(
    bot: BotUnderTest,
) -> None:
    # The menu was empty and Call said "Choose a flow.": a dead end, with nothing to choose.
    bot.evo.flows[:] = []
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    view = await open_form(bot)
    answer = await interact(bot, submission(view, state(flow=None)))
    assert answer["response_action"] == "errors"
    assert answer["errors"] == {FormField.FLOW: (
        "The Evo Voice account has no flows that callbot can use, so there is nothing to "
        "choose; nothing was dialled. Ask an administrator to add one.")}
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_several_bad_fields_are_reported_together(bot: BotUnderTest) -> None:
    view = await open_form(bot)
    answer = await interact(bot, submission(view, state(number="+1 900 555 0123", flow=None)))
    assert answer["response_action"] == "errors"
    assert set(answer["errors"]) == {FormField.NUMBER, FormField.FLOW}
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_after_fixing_the_errors_the_same_view_can_be_submitted(bot: BotUnderTest) -> None:
    view = await open_form(bot)
    first = await interact(bot, submission(view, state(flow=None)))
    assert first["response_action"] == "errors"
    second = await interact(bot, submission(view, state()))
    assert second.get("response_action") is None
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


# Without the repeat question, which would stop a second submission on its own (asking the
# requester whether to call again) and hide a claim on the view that no longer holds.
@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_submit_pressed_twice_dials_once(bot_factory: BotFactory, mode: str) -> None:
    bot = await bot_factory(mode, policy=POLICY_NO_REPEAT_QUESTION)
    view = await open_form(bot)
    payload = submission(view, state())
    first = await interact(bot, payload)
    second = await interact(bot, payload)
    assert first.get("response_action") is None and second.get("response_action") is None
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert len(parents(bot)) == 1


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_racing_submissions_of_one_view_dial_once(bot_factory: BotFactory, mode: str) -> None:
    bot = await bot_factory(mode, policy=POLICY_NO_REPEAT_QUESTION)
    view = await open_form(bot)
    payload = submission(view, state())
    answers = await asyncio.gather(*(interact(bot, payload) for _ in range(5)))
    assert all(a.get("response_action") is None for a in answers)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_two_forms_are_two_calls(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION)
    for _ in range(2):
        view = await open_form(bot)
        await interact(bot, submission(view, state()))
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


async def test_access_lost_after_opening_is_shown_in_the_form(bot: BotUnderTest) -> None:
    view = await open_form(bot, user_id="U0LEAD1")
    bot.slack.usergroups["S0LEADS"] = ["U0LEAD2"]  # removed from the group meanwhile
    bot.runtime.services.access.forget_groups()  # type: ignore[union-attr]
    answer = await interact(bot, submission(view, state(), user_id="U0LEAD1"))
    assert answer["response_action"] == "errors"
    assert "not allowed to place calls" in answer["errors"][FormField.NUMBER]
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_group_lookup_failing_on_submit_is_explained_in_the_form(
    bot: BotUnderTest,
) -> None:
    view = await open_form(bot, user_id="U0LEAD1")  # a Manager through user group S0LEADS
    bot.slack.fail("usergroups.users.list", "missing_scope")
    bot.runtime.services.access.forget_groups()  # type: ignore[union-attr]
    answer = await interact(bot, submission(view, state(), user_id="U0LEAD1"))
    assert answer["response_action"] == "errors"
    assert "usergroups:read" in answer["errors"][FormField.NUMBER]
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_caller_id_error_without_the_caller_id_select_shows_under_the_number(
    bot: BotUnderTest,
) -> None:
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    bot.evo.queue("GET", "/endpoints", ErrorStatus(500))
    view = await open_form(bot)
    await bot.settle()
    assert block(view.versions[-1], FormField.CALLER_ID) is None
    # By Call, the numbers are readable again, and the default is no longer among them.
    bot.evo.phone_numbers[:] = [n for n in bot.evo.phone_numbers
                                if n.get("phoneNumber") != "+18145550100"]
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    answer = await interact(bot, submission(view, state(caller_id=None)))
    assert answer["response_action"] == "errors"
    assert list(answer["errors"]) == [FormField.NUMBER]  # Slack shows errors only under inputs
    assert "not one of the account's" in answer["errors"][FormField.NUMBER]
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_someone_else_submitting_the_view_is_checked_as_themselves(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    view = await open_form(bot)
    answer = await interact(bot, submission(view, state(), user_id="U0INTRUDER"))
    assert "not allowed" in answer["errors"][FormField.NUMBER]
    # The role comes first: someone without one learns nothing of the dialling rules.
    answer = await interact(bot, submission(view, state(number="+1 900 555 0123", flow=None),
                                            user_id="U0INTRUDER"))
    assert list(answer["errors"]) == [FormField.NUMBER]
    assert "not allowed" in answer["errors"][FormField.NUMBER]
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_slow_check_answers_in_time_with_a_retry_hint(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(form_listener, "VALIDATION_BUDGET_SECONDS", 0.2)
    bot = await bot_factory("http")
    view = await open_form(bot, user_id="U0LEAD1")
    release = asyncio.Event()

    async def stuck_groups(call: ApiCall) -> None:
        await release.wait()

    bot.runtime.services.access.forget_groups()  # type: ignore[union-attr]
    bot.slack.on("usergroups.users.list", stuck_groups)
    answer = await interact(bot, submission(view, state(), user_id="U0LEAD1"))
    assert answer["response_action"] == "errors"
    assert "press Call again" in answer["errors"][FormField.NUMBER]
    release.set()
    bot.slack.off("usergroups.users.list")
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    # The view was not spent: submitting again works.
    again = await interact(bot, submission(view, state(), user_id="U0LEAD1"))
    assert again.get("response_action") is None
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_chosen_channel_that_is_not_a_conversation_is_asked_for_again(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    view = await open_from_shortcut(bot)
    for channel in ("U0ADMIN", "#general"):  # a person (a DM to them), a name
        answer = await interact(bot, submission(view, state(channel=channel)))
        assert answer["response_action"] == "errors", channel
        assert "Choose a channel" in answer["errors"][FormField.CHANNEL]
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_forged_private_metadata_is_refused(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    view = await open_form(bot)
    for metadata in ('{"channel": "C0OPS", "response_url": "https://evil.example/x"}',
                     '{"channel": "C0OPS", "response_url": "https://hooks.slack.com:8443/x"}',
                     # Ports urllib can't read (it raises): unusable too, not a bug.
                     '{"channel": "C0OPS", "response_url": "https://hooks.slack.com:99999/x"}',
                     '{"channel": "C0OPS", "response_url": "https://hooks.slack.com:x/x"}',
                     '{"channel": "#general"}', "not json", '["C0OPS"]'):
        view.view["private_metadata"] = metadata
        answer = await interact(bot, submission(view, state()))
        assert answer["response_action"] == "errors", metadata
        assert "open a new one" in answer["errors"][FormField.NUMBER]
    await bot.settle()
    assert bot.evo.outgoing_posts == []


@pytest.mark.parametrize("metadata", ["[" * 1500 + "]" * 1500, '[{"":' * 600],
                         ids=["nested-lists", "unclosed-nesting"])
async def test_private_metadata_nested_too_deep_to_read_is_refused_as_forged(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, metadata: str
) -> None:
    """JSON nested deeper than Python reads (within the 3,000 characters Slack allows) made the
    decoder raise RecursionError, not the ValueError of JSON it can't read: the form said
    "Something went wrong" under an unhandled ERROR. It is metadata the bot did not write."""
    view = await open_form(bot)
    view.view["private_metadata"] = metadata
    answer = await interact(bot, submission(view, state()))
    assert answer["response_action"] == "errors", answer
    assert "open a new one" in answer["errors"][FormField.NUMBER]
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("url", ["https://hooks.slack.com:99999/actions/x",
                                 "https://hooks.slack.com:x/actions/x"])
async def test_a_commands_response_url_with_an_unreadable_port_is_not_kept_and_the_form_opens(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    bot = await bot_factory("http")
    view = await open_form(bot, response_url=url)
    assert url not in json.dumps(view.view)  # not the form's way back to the requester
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_where_the_bot_cannot_post_the_commands_response_url_carries_the_news(
    bot: BotUnderTest,
) -> None:
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    url = bot.slack.response_url()
    view = await open_form(bot, channel_id="G0PRIV", response_url=url)
    await interact(bot, submission(view, state(reason="disk full")))
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert MASKED in answers[0]["text"] and "disk full" in answers[0]["text"]
    assert "Call placed" in answers[1]["text"]


async def test_a_form_submitted_after_its_commands_response_url_expired_still_tells_the_requester(
    bot: BotUnderTest,
) -> None:
    # A response_url lasts 30 minutes from the command (docs/slack-platform.md), however long
    # the form stayed open.
    now = [0.0]
    bot.slack.response_url_clock = lambda: now[0]
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    url = bot.slack.response_url()
    view = await open_form(bot, channel_id="G0PRIV", response_url=url)
    now[0] = 31 * 60
    await interact(bot, submission(view, state(reason="disk full")))
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert bot.slack.responses_to(url) == []
    [dm] = bot.slack.channel_messages("U0MANAGER")
    assert MASKED in (dm.text or "") and "disk full" in (dm.text or "")
    [status] = bot.slack.thread(dm.channel, dm.ts)
    assert "Call placed" in (status.text or "")


# ------------------------------------------------------------------------------------- shortcut


async def test_shortcut_form_confirms_in_the_chosen_channel(bot: BotUnderTest) -> None:
    view = await open_from_shortcut(bot)
    answer = await interact(bot, submission(view, state(channel="C0INCIDENT", reason="INC-7")))
    assert answer.get("response_action") is None
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    [parent] = parents(bot)
    assert parent.params["channel"] == "C0INCIDENT" and "INC-7" in parent.params["text"]
    [reply] = bot.slack.thread("C0INCIDENT", parent.response["ts"])  # type: ignore[index]
    assert "Call placed" in (reply.text or "")


async def test_shortcut_form_without_a_channel_asks_for_one(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    view = await open_from_shortcut(bot)
    answer = await interact(bot, submission(view, state(channel=None)))
    assert answer["errors"] == {FormField.CHANNEL: "Choose a channel for the confirmation."}
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_shortcut_form_falls_back_to_the_channel_selects_response_url(
    bot: BotUnderTest,
) -> None:
    bot.slack.fail("chat.postMessage", "not_in_channel", when=lambda c: c["channel"] == "G0PRIV")
    url = bot.slack.response_url()
    view = await open_from_shortcut(bot)
    await interact(bot, submission(view, state(channel="G0PRIV"), response_urls=[{
        "block_id": FormField.CHANNEL, "action_id": FormField.CHANNEL, "channel_id": "G0PRIV",
        "response_url": url,
    }]))
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert MASKED in answers[0]["text"] and "Call placed" in answers[1]["text"]


async def test_shortcut_form_where_nobody_can_be_told_in_the_channel_tells_the_requester(
    bot: BotUnderTest,
) -> None:
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    view = await open_from_shortcut(bot)
    await interact(bot, submission(view, state(channel="G0PRIV")))
    await bot.settle()
    # Dialled at once; the confirmation and its status go to the requester directly.
    assert len(bot.evo.outgoing_posts) == 1
    [dm] = bot.slack.channel_messages("U0MANAGER")
    assert "is calling" in (dm.text or "")
    [status] = bot.slack.thread(dm.channel, dm.ts)
    assert "Call placed" in (status.text or "")


# ------------------------------------------------------------------------------------- manifest


def test_the_manifest_declares_the_shortcut() -> None:
    [shortcut] = [s for s in manifest()["features"]["shortcuts"]
                  if s["callback_id"] == forms.PLACE_CALL_SHORTCUT_ID]
    assert shortcut["type"] == "global"


# ------------------------------------------------------------------------------------- units


def flows(*names: str) -> list[Flow]:
    return [Flow(id=f"id-{i}", name=name) for i, name in enumerate(names)]


def test_rank_flows_orders_exact_prefix_word_substring() -> None:
    catalog = flows("Deescalate", "Team Escalation", "Escalation Two", "Escalation", "Other")
    ranked = [f.name for f in rank_flows(catalog, "escalat", 10)]
    assert ranked == ["Escalation", "Escalation Two", "Team Escalation", "Deescalate"]
    ranked = [f.name for f in rank_flows(catalog, "Escalation", 10)]
    assert ranked == ["Escalation", "Escalation Two", "Team Escalation"]
    assert [f.name for f in rank_flows(catalog, "", 2)] == ["Deescalate", "Escalation"]
    assert [f.name for f in rank_flows(flows("Wake Up Call"), "wakeup", 10)] == ["Wake Up Call"]
    assert [f.name for f in rank_flows(catalog, "ESCALATION_TWO", 10)] == ["Escalation Two"]
    assert rank_flows(catalog, "nothing", 10) == []


def test_rank_flows_knows_aliases_and_ids() -> None:
    catalog = flows("Pager Duty", "Other")
    assert [f.name for f in rank_flows(catalog, "oncall", 10, {"oncall": "id-1"})] == ["Other"]
    assert [f.name for f in rank_flows(catalog, "id-0", 10)] == ["Pager Duty"]


def test_flow_options_respect_slacks_limits() -> None:
    catalog = [Flow(id=f"f{i}", name="N" * 200) for i in range(120)]
    catalog.append(Flow(id="x" * 151, name="a"))
    options = forms.flow_options(catalog)
    assert len(options) == 100
    assert all(len(o["text"]["text"]) <= 75 and len(o["value"]) <= 150 for o in options)
    assert forms.flow_options([Flow(id="x" * 151, name="a")]) == []
    # Same-named flows with long IDs: each shows the end of its ID, still within 75 characters.
    twins = [Flow(id="a" * 100 + side, name="Escalation " * 10) for side in "12"]
    texts = [o["text"]["text"] for o in forms.flow_options(twins)]
    assert len(set(texts)) == 2 and all(len(t) <= 75 for t in texts), texts


def test_form_keeps_the_default_caller_id_first_among_a_hundred() -> None:
    owned = [f"+1814555{i:04}" for i in range(100)]
    view = forms.call_form(
        ModalMetadata("C0OPS"), owned_numbers=owned, default_caller_id=owned[90]
    )
    caller = block(view, FormField.CALLER_ID)
    assert caller is not None
    assert len(caller["element"]["options"]) == 100
    assert caller["element"]["initial_option"]["value"] == owned[90]
    assert caller["element"]["options"][0]["value"] == owned[90]
    # Slack refuses a view whose initial option is not one of its options.
    assert caller["element"]["initial_option"] in caller["element"]["options"]
    assert len(view["private_metadata"]) <= 3000
    many = forms.call_form(
        ModalMetadata("C0OPS"), owned_numbers=[*owned, "+18145559999"], default_caller_id=owned[90]
    )
    caller = block(many, FormField.CALLER_ID)
    assert caller is not None and caller["element"]["type"] == "external_select"
    assert forms.caller_id_options([*owned, "+18145559999"], "", owned[90])[0]["value"] == (
        owned[90])


def test_form_without_owned_numbers_has_no_caller_id_select() -> None:
    view = forms.call_form(ModalMetadata("C0OPS"), owned_numbers=None)
    assert block(view, FormField.CALLER_ID) is None
    # An error for the missing field moves under the first input instead of being lost.
    errors = field_errors(
        {FormField.CALLER_ID: "bad"}, [FormField.NUMBER, FormField.FLOW], forms.GENERAL_ERROR_FIELD
    )
    assert errors == {FormField.NUMBER: "bad"}


def test_a_long_prefill_is_left_out_not_cut_short() -> None:
    view = forms.call_form(ModalMetadata("C0OPS"), number_text="+1 814 404 3093 " + "9" * 30)
    number = block(view, FormField.NUMBER)
    assert number is not None and "initial_value" not in number["element"]


def test_read_submission_takes_the_channel_selects_preset_and_its_response_url() -> None:
    view = forms.call_form(ModalMetadata(), ask_channel=True)
    channel = block(view, FormField.CHANNEL)
    assert channel is not None
    channel["element"]["initial_conversation"] = "C0PRESET"  # untouched preset, absent from state
    view["state"] = {"values": state()}
    urls = [
        {
            "block_id": FormField.CHANNEL,
            "channel_id": "C0OTHER",
            "response_url": "https://hooks.slack.com/a",
        },
        {
            "block_id": FormField.CHANNEL,
            "channel_id": "C0PRESET",
            "response_url": "https://evil.example/b",
        },
        {
            "block_id": FormField.CHANNEL,
            "channel_id": "C0PRESET",
            "response_url": "https://hooks.slack.com/c",
        },
    ]
    read = forms.read_submission(view, urls)
    assert read.channel_id == "C0PRESET"
    assert read.response_url == "https://hooks.slack.com/c"
    assert read.number_text == FULL and read.flow_id == "flow-esc" and read.caller_id is None
    assert FormField.CHANNEL in read.fields


async def test_every_owned_number_can_be_chosen_as_caller_id_past_the_first_hundred(
    bot_factory: BotFactory,
) -> None:
    # An account with 150 numbers showed a menu of the first 100: the other 50 could not be
    # chosen at all, and nothing said they were missing. Past 100, the menu searches them.
    bot = await bot_factory("http")
    bot.evo.phone_numbers[:] = [
        {"id": f"ep-{i}", "displayName": f"Line {i}", "phoneNumber": f"+1814555{i:04}",
         "accountId": "acct-1"} for i in range(100, 250)
    ]
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    view = await open_form(bot)
    caller = block(view.versions[-1], FormField.CALLER_ID)
    assert caller is not None
    assert caller["element"]["type"] == "external_select"
    assert caller["element"]["initial_option"]["value"] == "+18145550100"  # the default
    assert "150" in caller["hint"]["text"]  # says how many there are, and to type digits

    async def offered(text: str) -> list[str]:
        answer = await interact(bot, block_suggestion_payload(
            action_id=FormField.CALLER_ID, block_id=FormField.CALLER_ID, value=text))
        return [option["value"] for option in answer["options"]]

    assert len(await offered("")) == 100
    assert await offered("555 0240") == ["+18145550240"]
    assert await offered("(814) 555-0240") == ["+18145550240"]
    assert await offered("24") == ["+18145550124", "+18145550224", "+18145550240",
                                   "+18145550241", "+18145550242", "+18145550243",
                                   "+18145550244", "+18145550245", "+18145550246",
                                   "+18145550247", "+18145550248", "+18145550249"]
    assert await offered("0240") == ["+18145550240"]
    assert await offered("x") == []
    # Only to people who may call.
    answer = await interact(bot, block_suggestion_payload(
        action_id=FormField.CALLER_ID, block_id=FormField.CALLER_ID, value="",
        user_id="U0INTRUDER"))
    assert answer["options"] == []

    values = state(caller_id="+18145550240")
    values[FormField.CALLER_ID][FormField.CALLER_ID]["type"] = "external_select"
    answer = await interact(bot, submission(view, values))
    assert answer == {} or answer.get("response_action") == "clear", answer
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json["callerId"] == "+18145550240"
