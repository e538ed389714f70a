"""`/call oncall` and `/call oncall take` after their ack: who is on call, and taking the shift.

The answer goes to the requester alone, except a taken shift, which is announced in the channel
so the team knows whom the pager reaches. Every failure reaches the requester in words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.access import AccessControl, Responders
from bot.calls import messages as views
from bot.config import MANAGER, SYSTEM_ADMINISTRATOR
from bot.errors import Expected, describe_any
from bot.oncall.roster import OnCall
from bot.oncall.roster_views import status_message, taken_message
from bot.slack.notify import Notifier
from bot.slack.threads import NotDelivered
from bot.storage.claims import Claims
from bot.storage.faults import refused_when_database_fails

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RosterRequest:
    """Who asked, where, and how to answer them; `request_key` is unique to one invocation."""

    user_id: str
    channel_id: str | None
    response_url: str | None
    request_key: str | None


class RosterCommands:
    def __init__(
        self, *, access: AccessControl, responders: Responders, oncall: OnCall,
        notifier: Notifier, claims: Claims,
    ) -> None:
        self._access = access
        self._responders = responders
        self._oncall = oncall
        self._notifier = notifier
        self._claims = claims

    async def show(self, request: RosterRequest) -> None:
        try:
            # Responders (bot.access.Responders), not only role holders, may see the rotation.
            await self._responders.require(request.user_id, action="see who is on call")
            # Overrides live in the database: without it nobody can say who is on call, and a
            # database that doesn't answer is not a bug to report.
            with refused_when_database_fails("it can't say who is on call just now",
                                             reading=True):
                status = await self._oncall.status(self._oncall.now())
            message = status_message(status)
        except Exception as exc:  # every failure reaches the requester, in words
            message = views.refusal(describe_any(exc))
        await self._tell(request, message)

    async def take(self, request: RosterRequest) -> None:
        try:
            with refused_when_database_fails("the on-call shift was not taken"):
                # A redelivered command must not announce the change twice.
                if request.request_key and not await self._claims.claim(request.request_key):
                    return
                await self._access.require(
                    request.user_id, roles=(MANAGER, SYSTEM_ADMINISTRATOR),
                    action="take the on-call shift",
                )
                override, person = await self._oncall.take(request.user_id)
        except Exception as exc:
            if isinstance(exc, Expected):  # anything else is logged with its reference
                logger.info("on-call shift not taken by %s: %s", request.user_id,
                            type(exc).__name__,
                            extra={"user_id": request.user_id, "outcome": "refused"})
            await self._tell(request, views.refusal(describe_any(exc)))
            return
        message = taken_message(override, person, self._oncall.rotation.tz)
        try:
            if request.channel_id is None:
                raise NotDelivered("no channel")
            await self._notifier.start_thread(
                request.channel_id, message, response_url=request.response_url
            )
        except NotDelivered:
            await self._tell(request, message)

    async def _tell(self, request: RosterRequest, message: views.Message) -> None:
        await self._notifier.tell(
            user_id=request.user_id,
            channel_id=request.channel_id,
            response_url=request.response_url,
            message=message,
        )
