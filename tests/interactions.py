"""Driving the bot's Slack surfaces as a person does: the call form, the "are you sure?" buttons.

Shared by the tests of every feature that goes through them; each returns what Slack would show.
"""

from __future__ import annotations

import itertools
import json
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from bot.calls import form as forms
from bot.calls.confirm_views import CONFIRM_CALL_ACTION
from bot.calls.form import FormField
from bot.standins.slack import (
    View,
    block_actions_payload,
    global_shortcut_payload,
    interactive_body,
    slash_command_body,
    slash_command_payload,
    view_submission_payload,
)
from bot.oncall.escalation_form import ESCALATION_FORM
from tests.conftest import Ack, BotUnderTest, until

FULL = "+18144043093"
_ACTION_TS = itertools.count(1)
LOADING = (forms.CALL_FORM.loading, ESCALATION_FORM.loading)


# ------------------------------------------------------------------------------- the call form


async def interact(bot: BotUnderTest, payload: dict[str, Any]) -> dict[str, Any]:
    """Send an interactive payload as Slack does in this mode; return the ack's body."""
    if bot.mode == "socket":
        envelope = await bot.slack.send_envelope("interactive", payload)
        return envelope.get("payload") or {}
    ack = await bot.post_signed(interactive_body(payload))
    assert ack.status == 200, ack.body
    return ack.body


async def send_call(
    bot: BotUnderTest, text: str, *, trigger_id: str, user_id: str = "U0MANAGER",
    channel_id: str = "C0OPS", response_url: str | None = None,
) -> tuple[Ack, str]:
    """`/call text` with a trigger_id of the test's choosing (else like BotUnderTest.command)."""
    url = response_url or bot.slack.response_url()
    fields = dict(text=text, user_id=user_id, channel_id=channel_id, response_url=url,
                  trigger_id=trigger_id)
    if bot.mode == "socket":
        envelope = await bot.slack.send_envelope("slash_commands", slash_command_payload(**fields))
        return Ack(200, envelope.get("payload") or {}), url
    return await bot.post_signed(slash_command_body(**fields)), url


def loading(view: View) -> bool:
    """Whether the modal shows a form's loading view (the form opened before its data was in:
    bot/listeners/modals.py), which the form, or a notice, replaces once it is."""
    shown = json.dumps(view.versions[-1].get("blocks") or [], ensure_ascii=False)
    return "submit" not in view.versions[-1] and any(text in shown for text in LOADING)


async def as_shown(view: View) -> View:
    """The modal once past its loading view, as the person who opened it acts on it."""
    await until(lambda: not loading(view), timeout=10)
    return view


async def open_form(
    bot: BotUnderTest, text: str = "", *, user_id: str = "U0MANAGER", channel_id: str = "C0OPS",
    response_url: str | None = None, ready: bool = True,
) -> View:
    """Open the form with `/call text` and return the modal Slack now shows (`ready`: once past
    its loading view)."""
    before = len(bot.slack.calls_to("views.open"))
    trigger = bot.slack.new_trigger_id()  # single use, and it expires like Slack's
    ack, _ = await send_call(bot, text, trigger_id=trigger, user_id=user_id,
                             channel_id=channel_id, response_url=response_url)
    assert ack.status == 200
    calls = await bot.slack.wait_for_calls("views.open", before + 1)
    opened = calls[-1]
    assert opened.params["trigger_id"] == trigger and opened.ok, opened.brief()
    view = bot.slack.views[opened.response["view"]["id"]]  # type: ignore[index]
    return await as_shown(view) if ready else view


async def open_from_shortcut(
    bot: BotUnderTest, *, user_id: str = "U0MANAGER", ready: bool = True
) -> View:
    before = len(bot.slack.calls_to("views.open"))
    trigger = bot.slack.new_trigger_id()
    await interact(bot, global_shortcut_payload(
        callback_id=forms.PLACE_CALL_SHORTCUT_ID, user_id=user_id, trigger_id=trigger))
    calls = await bot.slack.wait_for_calls("views.open", before + 1)
    assert calls[-1].params["trigger_id"] == trigger and calls[-1].ok, calls[-1].brief()
    view = bot.slack.views[calls[-1].response["view"]["id"]]  # type: ignore[index]
    return await as_shown(view) if ready else view


def state(
    number: str | None = FULL, flow: str | None = "flow-esc", caller_id: str | None = None,
    reason: str | None = None, channel: str | None = None,
) -> dict[str, dict[str, Any]]:
    """`view.state.values` as Slack sends it for the form."""
    def selected(kind: str, value: str | None) -> dict[str, Any]:
        option = {"text": {"type": "plain_text", "text": value}, "value": value} if value else None
        return {"type": kind, "selected_option": option}

    values: dict[str, dict[str, Any]] = {
        FormField.NUMBER: {FormField.NUMBER: {"type": "plain_text_input", "value": number}},
        FormField.FLOW: {FormField.FLOW: selected("external_select", flow)},
        FormField.CALLER_ID: {FormField.CALLER_ID: selected("static_select", caller_id)},
        FormField.REASON: {FormField.REASON: {"type": "plain_text_input", "value": reason}},
    }
    if channel is not None:
        values[FormField.CHANNEL] = {
            FormField.CHANNEL: {"type": "conversations_select", "selected_conversation": channel}
        }
    return values


def submission(
    view: View, values: dict[str, dict[str, Any]], *, user_id: str = "U0MANAGER",
    response_urls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return view_submission_payload(
        callback_id=forms.CALL_FORM_CALLBACK_ID, values=values, view=view.view, view_id=view.id,
        user_id=user_id, response_urls=response_urls,
    )


async def refused_then_sent_again(
    bot: BotUnderTest, view: View, number: str,
    failing: AbstractContextManager[object] | None = None,
) -> None:
    """Submit the call form (flow-wake, caller ID +1 814 555 0101, reason INC-42) while the
    database fails it (inside `failing`, or a fault of one write set up before): refused in the
    form, nothing dialled. Then Submit again, as the form asks: `number` is dialled, once."""
    values = state(number, flow="flow-wake", caller_id="+18145550101", reason="INC-42")
    with failing or nullcontext():
        answer = await interact(bot, submission(view, values))
    assert answer.get("response_action") == "errors", answer
    [error] = answer["errors"].values()
    assert "callbot could not write to its database, so nothing was dialled (reference " in error
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    again = await interact(bot, submission(view, values))
    assert again.get("response_action") in (None, "clear"), again
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [number]


# ---------------------------------------------------------------------- "are you sure?"


def button(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                return dict(element)
    raise AssertionError(f"no {action_id} button in {message}")


async def click(
    bot: BotUnderTest, question: dict[str, Any], action_id: str = CONFIRM_CALL_ACTION, *,
    user_id: str = "U0MANAGER", value: str | None = None, response_url: str | None = None,
) -> tuple[Ack, str]:
    """Click a button of `question` as Slack sends it; return the ack and the click's
    response_url."""
    url = response_url or bot.slack.response_url()
    payload = block_actions_payload(
        action_id=action_id, block_id="call_confirmation",
        value=value if value is not None else button(question, action_id)["value"],
        user_id=user_id, response_url=url, channel_id="C0OPS",
        # Every click has its own action_ts; a double click is two clicks.
        extra_action={"action_ts": f"1700000300.{next(_ACTION_TS):06d}"},
    )
    if bot.mode == "socket":
        envelope = await bot.slack.send_envelope("interactive", payload)
        return Ack(200, envelope.get("payload") or {}), url
    return await bot.post_signed(interactive_body(payload)), url


async def ask(bot: BotUnderTest, text: str, user_id: str = "U0MANAGER") -> dict[str, Any]:
    """Send `/call text` and return the question it gets back."""
    _, url = await bot.command(text, user_id=user_id)
    [question] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert button(question, CONFIRM_CALL_ACTION), question
    return question
