"""The buttons on a call's status message: ack at once, then hand the click to `CallControls`."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.calls import messages as views
from bot.calls.controls import ButtonClick
from bot.calls.status_views import CALL_AGAIN_ACTION, HANG_UP_ACTION
from bot.services import Services

logger = logging.getLogger(__name__)

RESTARTING = "callbot is restarting; nothing was done. Try again in a few seconds."


def register(app: AsyncApp) -> None:
    app.action(HANG_UP_ACTION)(on_hang_up)
    app.action(CALL_AGAIN_ACTION)(on_call_again)


async def on_hang_up(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    services: Services = context["services"]
    click = button_click_from(body)
    if await _refused_while_restarting(services, click):
        return
    services.tasks.spawn(services.controls.hang_up(click), name=f"hang up by {click.user_id}")


async def on_call_again(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    services: Services = context["services"]
    click = button_click_from(body)
    if await _refused_while_restarting(services, click):
        return
    services.tasks.spawn(
        services.controls.call_again(click), name=f"call again by {click.user_id}"
    )


async def _refused_while_restarting(services: Services, click: ButtonClick) -> bool:
    if not services.tasks.closed:
        return False
    await services.notifier.tell(
        user_id=click.user_id,
        channel_id=click.channel_id,
        response_url=click.response_url,
        message=views.refusal(RESTARTING),
    )
    return True


def button_click_from(body: dict[str, Any]) -> ButtonClick:
    user = body.get("user") or {}
    container = body.get("container") or {}
    channel = body.get("channel") or {}
    actions = body.get("actions") or [{}]
    return ButtonClick(
        team_id=str((body.get("team") or {}).get("id") or user.get("team_id") or ""),
        user_id=str(user.get("id") or ""),
        channel_id=container.get("channel_id") or channel.get("id") or None,
        message_ts=container.get("message_ts") or (body.get("message") or {}).get("ts") or None,
        value=str(actions[0].get("value") or ""),
        response_url=body.get("response_url") or None,
    )
