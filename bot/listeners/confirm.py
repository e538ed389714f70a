"""The "Call" and "Cancel" buttons under an "are you sure?" question (see confirm_views).

A click is a new request: `CallService.confirm` checks the clicker's role and the number again
before dialling, and dials at most once however often the button is clicked.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.calls.confirm_views import CANCEL_CALL_ACTION, CONFIRM_CALL_ACTION, confirmation_answered
from bot.calls.confirmations import valid_id
from bot.services import Services

logger = logging.getLogger(__name__)

RESTARTING = "callbot is restarting; nothing was dialled. Click again in a few seconds."


def register(app: AsyncApp) -> None:
    app.action(CONFIRM_CALL_ACTION)(on_confirm)
    app.action(CANCEL_CALL_ACTION)(on_cancel)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _field(body: dict[str, Any], key: str, inner: str) -> str | None:
    part = body.get(key)
    return _text(part.get(inner)) if isinstance(part, dict) else None


def _click(body: dict[str, Any], action: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    """(confirmation id, clicker, channel, response_url) from a payload that may be forged."""
    channel_id = _field(body, "channel", "id") or _field(body, "container", "channel_id")
    return (
        _text(action.get("value")) or "",
        _field(body, "user", "id") or "",
        channel_id,
        _text(body.get("response_url")),
    )


async def on_confirm(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext
) -> None:
    await ack()
    services: Services = context["services"]
    confirmation_id, user_id, channel_id, response_url = _click(body, action)
    if not user_id or not valid_id(confirmation_id):
        logger.warning("ignored a confirmation click without a user or a valid id")
        return
    if services.tasks.closed:
        # The question stays valid: the same button works once the bot is back.
        if response_url is not None:
            await services.notifier.replace(response_url, confirmation_answered(RESTARTING))
        return
    services.tasks.spawn(
        services.calls.confirm(
            confirmation_id, user_id=user_id, channel_id=channel_id, response_url=response_url
        ),
        name=f"confirmed call by {user_id}",
    )


async def on_cancel(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext
) -> None:
    await ack()
    services: Services = context["services"]
    confirmation_id, user_id, channel_id, response_url = _click(body, action)
    if not user_id or not valid_id(confirmation_id) or services.tasks.closed:
        return
    services.tasks.spawn(
        services.calls.cancel(
            confirmation_id, user_id=user_id, channel_id=channel_id, response_url=response_url
        ),
        name=f"cancelled call by {user_id}",
    )
