"""The buttons on a call's status message: ack at once, then hand the click to `CallControls`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.calls.controls import ButtonClick
from bot.calls.models import Outcome
from bot.calls.status_views import CALL_AGAIN_ACTION, HANG_UP_ACTION
from bot.services import Services

logger = logging.getLogger(__name__)

def register(app: AsyncApp) -> None:
    app.action(HANG_UP_ACTION)(on_hang_up)
    app.action(CALL_AGAIN_ACTION)(on_call_again)


async def on_hang_up(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    services: Services = context["services"]
    click = button_click_from(body)
    if without_clicker(click):
        return
    services.tasks.spawn(once_per_click(services, click, partial(services.controls.hang_up, click)),
                         name=f"hang up by {click.user_id}")


async def on_call_again(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    services: Services = context["services"]
    click = button_click_from(body)
    if without_clicker(click):
        return
    # On its way to the phone from now (bot/calls/dials_first.py): its work dials (handle()) or
    # soon ends: a repeated click, or a refusal, which ends the count before it is told. Its
    # checks (the database, a role, the flow) are those of a dial, each timed out in seconds.
    services.calls.dials_first.acked(partial(
        services.tasks.spawn,
        once_per_click(services, click, partial(services.controls.call_again, click),
                       partial(services.calls.count_ending, Outcome.DUPLICATE)),
        name=f"call again by {click.user_id}",
    ))


def without_clicker(click: ButtonClick) -> bool:
    """True, and logged, for a malformed click naming no user: there is no clicker to check
    against the call or escalation, and nobody to tell (trying would only log Slack's refusal to
    post to no one). Every button's listener ignores such a click."""
    if click.user_id:
        return False
    logger.warning("ignored a click of %s without a user", click.action_id or "a button")
    return True


def button_click_from(body: dict[str, Any]) -> ButtonClick:
    """Every button's click, from a payload that may be malformed: each part a string or empty."""
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else None
    return ButtonClick(
        team_id=_field(body, "team", "id") or _field(body, "user", "team_id") or "",
        user_id=user_of(body),
        channel_id=_field(body, "container", "channel_id") or _field(body, "channel", "id"),
        message_ts=_field(body, "container", "message_ts") or _field(body, "message", "ts"),
        value=_text(action.get("value") if isinstance(action, dict) else None) or "",
        response_url=_text(body.get("response_url")),
        action_id=_text(action.get("action_id") if isinstance(action, dict) else None) or "",
        action_ts=_text(action.get("action_ts") if isinstance(action, dict) else None) or "",
    )


async def once_per_click(services: Services, click: ButtonClick,
                         work: Callable[[], Awaitable[object]],
                         repeated: Callable[[], None] | None = None) -> None:
    """`work` for the first delivery of `click`. Slack may deliver one click more than once (a
    Socket Mode envelope again after a reconnect, a proxy resending, a copy on each replica): the
    copy, claimed by the click's own identity (who, where, which button, Slack's `action_ts`),
    does nothing and tells nothing (`repeated`: counts it). A click clicked again is a new click
    (its own `action_ts`), answered as every button answers it. A database failing on the claim
    lets the click through: its work says what the database did to it."""
    key = click_key(click)
    if key is not None:
        first = await services.claims.first_or_unsure(
            key, f"click of {click.action_id} by {click.user_id} handled")
        if not first:
            logger.info("repeated delivery of a click of %s by %s ignored", click.action_id,
                        click.user_id, extra={"user_id": click.user_id})
            if repeated is not None:
                repeated()
            return
    await work()


def click_key(click: ButtonClick) -> str | None:
    """A click's claim: its own identity (who, where, which button, Slack's `action_ts`), the same
    in every delivery of it. None without an `action_ts`."""
    if not click.action_ts:
        return None
    return (f"click:{click.team_id}:{click.user_id}:{click.channel_id or ''}:"
            f"{click.message_ts or ''}:{click.action_id}:{click.action_ts}")


def command_key(command: dict[str, Any]) -> str | None:
    """A slash command's claim: its trigger_id is unique to one invocation, and a redelivered
    envelope carries the same one. None without a trigger_id."""
    trigger = command.get("trigger_id")
    return f"command:{command.get('team_id')}:{trigger}" if trigger else None


def user_of(body: dict[str, Any]) -> str:
    """The user any payload (a click, a shortcut, a form's Submit) names; "" when it names none,
    or not as a string."""
    return _field(body, "user", "id") or ""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _field(body: dict[str, Any], key: str, inner: str) -> str | None:
    part = body.get(key)
    return _text(part.get(inner)) if isinstance(part, dict) else None
