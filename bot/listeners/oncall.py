"""`/call oncall` and `/call oncall take`: the arguments checked in the ack, then the work handed to
bot/oncall/roster_commands.py (roles, the roster, the database are consulted after the ack).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck

from bot.calls import messages as views
from bot.listeners.actions import command_key
from bot.oncall.roster_commands import RosterCommands, RosterRequest
from bot.oncall.roster_views import ONCALL_USAGE
from bot.phone import fold_width
from bot.services import Services

logger = logging.getLogger(__name__)

TAKE = "take"


async def on_oncall_subcommand(
    ack: AsyncAck, command: dict[str, Any], args: tuple[str, ...], services: Services
) -> None:
    words = [fold_width(word).lower() for word in args]  # "ｔａｋｅ", as "ｏｎｃａｌｌ" was
    if words not in ([], [TAKE]):
        await ack(**services.notifier.for_ack(views.refusal(ONCALL_USAGE)))
        return
    await ack()
    commands = RosterCommands(access=services.access, responders=services.responders,
                              oncall=services.oncall, notifier=services.notifier,
                              claims=services.claims)
    work = commands.take if words == [TAKE] else commands.show
    services.tasks.spawn(
        work(roster_request_from(command)),
        name=f"oncall {' '.join(words)} by {command.get('user_id')}",
    )


def roster_request_from(command: dict[str, Any]) -> RosterRequest:
    return RosterRequest(
        user_id=str(command["user_id"]),
        channel_id=str(command.get("channel_id") or "") or None,
        response_url=command.get("response_url") or None,
        request_key=command_key(command),
    )
