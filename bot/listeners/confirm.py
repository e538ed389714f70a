"""The "Call" and "Cancel" buttons under an "are you sure?" question (see confirm_views).

A click is a new request: `CallService.confirm` checks the clicker's role and the number again
before dialling, and dials at most once however often the button is clicked.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.calls.confirm_views import CANCEL_CALL_ACTION, CONFIRM_CALL_ACTION
from bot.calls.confirmations import valid_id
from bot.listeners.actions import button_click_from, once_per_click
from bot.services import Services

logger = logging.getLogger(__name__)

def register(app: AsyncApp) -> None:
    app.action(CONFIRM_CALL_ACTION)(on_answer)
    app.action(CANCEL_CALL_ACTION)(on_answer)


async def on_answer(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    """"Call" or "Cancel": the button's action id says which, its value names the question."""
    await ack()
    services: Services = context["services"]
    click = button_click_from(body)
    if not click.user_id or not valid_id(click.value):
        logger.warning("ignored a confirmation click without a user or a valid id")
        return
    confirming = click.action_id == CONFIRM_CALL_ACTION
    answer = services.calls.confirm if confirming else services.calls.cancel
    spawn = partial(
        services.tasks.spawn,
        once_per_click(services, click, partial(
            answer, click.value, user_id=click.user_id, channel_id=click.channel_id,
            response_url=click.response_url)),
        name=f"{'confirmed' if confirming else 'cancelled'} call by {click.user_id}",
    )
    if not confirming:
        spawn()
        return
    # "Call": on its way to the phone from now (bot/calls/dials_first.py). Its work dials
    # (handle()) or soon ends: a repeated click, or a question gone, expired or failing to be
    # taken, which ends the count before it is told (Questions.confirm).
    services.calls.dials_first.acked(spawn)
