"""`/call oncall` and `/call oncall take`: the roster, and taking the current shift.

Routed here by the `/call` listener. The ack is immediate (the arguments are checked in it); roles,
phone numbers and the database are consulted after it, and the answer goes to the requester alone,
except a taken shift, which is announced in the channel so the team knows whom the pager reaches.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck

from bot.calls import messages as views
from bot.config import MANAGER, SYSTEM_ADMINISTRATOR
from bot.errors import describe_any
from bot.oncall.roster_views import ONCALL_USAGE, status_message, taken_message
from bot.services import Services
from bot.slack.notify import NotDelivered
from bot.storage.claims import Claims

logger = logging.getLogger(__name__)

TAKE = "take"


async def on_oncall_subcommand(
    ack: AsyncAck, command: dict[str, Any], args: tuple[str, ...], services: Services
) -> None:
    words = [word.lower() for word in args]
    if words == []:
        handler = show_on_call
    elif words == [TAKE]:
        handler = take_shift
    else:
        await ack(**views.refusal(ONCALL_USAGE).as_kwargs())
        return
    await ack()
    services.tasks.spawn(
        handler(services, command), name=f"oncall {' '.join(words)} by {command.get('user_id')}"
    )


async def show_on_call(services: Services, command: dict[str, Any]) -> None:
    user_id = str(command["user_id"])
    try:
        await services.access.require(user_id, action="see who is on call")
        status = await services.oncall.status(services.oncall.now())
        message = status_message(status)
    except Exception as exc:  # every failure reaches the requester, in words
        message = views.refusal(describe_any(exc))
    await _tell(services, command, message)


async def take_shift(services: Services, command: dict[str, Any]) -> None:
    user_id = str(command["user_id"])
    trigger = command.get("trigger_id")
    # A redelivered command must not announce the change twice.
    key = f"command:{command.get('team_id')}:{trigger}"
    if trigger and not await Claims(services.db).claim(key):
        return
    try:
        await services.access.require(
            user_id, roles=(MANAGER, SYSTEM_ADMINISTRATOR), action="take the on-call shift"
        )
        override, person = await services.oncall.take(user_id, services.oncall.now())
    except Exception as exc:
        await _tell(services, command, views.refusal(describe_any(exc)))
        return
    message = taken_message(override, person, services.oncall.rotation.tz)
    try:
        await services.notifier.start_thread(
            str(command["channel_id"]), message, response_url=command.get("response_url") or None
        )
    except NotDelivered:
        await _tell(services, command, message)


async def _tell(services: Services, command: dict[str, Any], message: views.Message) -> None:
    await services.notifier.tell(
        user_id=str(command["user_id"]),
        channel_id=str(command.get("channel_id") or "") or None,
        response_url=command.get("response_url") or None,
        message=message,
    )
