"""`/call history`: the last calls from the audit trail, for Managers and SystemAdministrators.

    /call history               the last 20 attempts, newest first
    /call history @user         one person's: `<@U123|name>` (escaped commands), `U123`, or `@name`
    /call history +18144043093  one number's, matched by its keyed hash (the number isn't stored)

With `should_escape: false` (our manifest) Slack sends a mention as the plain text `@name`, so a
name is looked up with `users.list` (username, display name or real name, case-insensitively).
The answer is ephemeral: only the person who asked sees it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import AccessControl
from bot.audit.trail import AuditLog
from bot.calls import messages as views
from bot.calls import history_views
from bot.calls import status_views as call_views
from bot.config import KNOWN_ROLES
from bot.errors import CallbotError, describe
from bot.phone import NumberRejected, fold_width, mask, to_e164
from bot.slack.blocks import listing
from bot.slack.notify import Notifier
from bot.storage.faults import refused_when_database_fails

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 20
USERS_PAGE_SIZE = 200
MAX_USER_PAGES = 50
MAX_PEOPLE_CHARS = 2400  # the people a name is shared by, in a refusal

HISTORY_USAGE = (
    "Usage: /call history [@person | member ID | number], e.g. /call history @alex or "
    "/call history +18144043093"
)

_MENTION = re.compile(r"^<@([UW][A-Z0-9]{2,20})(?:\|[^>]*)?>$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_NAME = re.compile(r"^@([^\s<>@]{1,80})$")
_NUMBERISH = re.compile(r"^[+(0-9][0-9 ()+.\-]*$")


class HistoryFilterRejected(CallbotError):
    pass


@dataclass(frozen=True)
class HistoryFilter:
    user_id: str | None = None
    user_name: str | None = None  # `@name`, to be looked up
    e164: str | None = None


@dataclass(frozen=True)
class HistoryRequest:
    team_id: str
    user_id: str
    channel_id: str
    args: tuple[str, ...]
    response_url: str | None = None


def parse_history_filter(args: tuple[str, ...], default_region: str) -> HistoryFilter:
    text = " ".join(args).strip()
    if not text:
        return HistoryFilter()
    if len(args) == 1:
        token = args[0]
        mention = _MENTION.fullmatch(token)
        if mention:
            return HistoryFilter(user_id=mention.group(1))
        if _USER_ID.fullmatch(token):
            return HistoryFilter(user_id=token)
        name = _NAME.fullmatch(token)
        if name:
            return HistoryFilter(user_name=name.group(1))
    # Full-width digits and signs (a CJK input mode's) read as /call reads them.
    if _NUMBERISH.fullmatch(fold_width(text)):
        try:
            return HistoryFilter(e164=to_e164(text, default_region))
        except NumberRejected as exc:
            raise HistoryFilterRejected(f"{exc.reason}\n{HISTORY_USAGE}") from None
    raise HistoryFilterRejected(f"I can't filter by that.\n{HISTORY_USAGE}")


class HistoryService:
    def __init__(
        self,
        *,
        access: AccessControl,
        audit: AuditLog,
        notifier: Notifier,
        slack: AsyncWebClient,
        default_region: str,
        limit: int = HISTORY_LIMIT,
        acknowledges: call_views.AckTest = call_views.no_ack_outcomes,
    ) -> None:
        self._access = access
        # Public: the Home tab's recent calls say how each went as this history does.
        self.acknowledges = acknowledges
        self._audit = audit
        self._notifier = notifier
        self._slack = slack
        self._default_region = default_region
        self._limit = limit

    async def show(self, request: HistoryRequest) -> None:
        try:
            with refused_when_database_fails("the call history can't be shown", reading=True):
                message = await self._history(request)
        except CallbotError as exc:
            message = views.refusal(describe(exc))
        await self._notifier.tell(
            user_id=request.user_id,
            channel_id=request.channel_id,
            response_url=request.response_url,
            message=message,
        )

    async def _history(self, request: HistoryRequest) -> views.Message:
        await self._access.require(request.user_id, KNOWN_ROLES, action="see the call history")
        wanted = parse_history_filter(request.args, self._default_region)
        user_id = wanted.user_id
        if wanted.user_name is not None:
            user_id = await self._user_named(wanted.user_name)
        number_hash = self._audit.number_hash(wanted.e164) if wanted.e164 else None
        # Every call made through this installation, whoever's team the caller belongs to: a
        # Slack Connect or Enterprise Grid user from another team calls from this workspace too,
        # and their calls are recorded under their own team_id.
        records = await self._audit.history(
            None, user_id=user_id, number_hash=number_hash, limit=self._limit
        )
        # As many as are listed: "Last 20 calls" over two lines reads as if some were lost.
        count = len(records) or self._limit
        heading = f"Last {count} call{'' if count == 1 else 's'}"
        if user_id is not None:
            heading += f" by <@{user_id}>"
        if wanted.e164 is not None:
            heading += f" to {mask(wanted.e164)}"
        return history_views.history(records, heading, self.acknowledges)

    async def _user_named(self, name: str) -> str:
        wanted = name.casefold()
        found: dict[str, str] = {}
        cursor: str | None = None
        try:
            for _ in range(MAX_USER_PAGES):
                page = await self._slack.users_list(limit=USERS_PAGE_SIZE, cursor=cursor)
                for member in page.get("members") or []:
                    if not member.get("deleted") and wanted in _names_of(member):
                        found[str(member["id"])] = str(member.get("name") or member["id"])
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown error"))
            logger.warning("users.list failed: %s", error)
            raise HistoryFilterRejected(
                f"I could not look up @{name} ({error}). Use their member ID instead (profile → "
                f"⋮ → Copy member ID).\n{HISTORY_USAGE}"
            ) from None
        if not found:
            raise HistoryFilterRejected(
                f"No one here goes by @{name}. Use their member ID (profile → ⋮ → Copy member "
                f"ID).\n{HISTORY_USAGE}"
            )
        if len(found) > 1:
            # As many as fit, then how many more: what to do is still said (a section's 3,000).
            people = listing([f"{uid} ({found[uid]})" for uid in sorted(found)], MAX_PEOPLE_CHARS)
            raise HistoryFilterRejected(
                f"Several people go by @{name}: {people}. Use the member ID of the one you mean."
            )
        return next(iter(found))


def _names_of(member: dict[str, Any]) -> set[str]:
    profile = member.get("profile") or {}
    names = (
        member.get("name"),
        member.get("real_name"),
        profile.get("display_name"),
        profile.get("display_name_normalized"),
        profile.get("real_name"),
        profile.get("real_name_normalized"),
    )
    return {str(n).casefold() for n in names if n}
