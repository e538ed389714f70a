"""Who may do what: roles from the policy file, held directly or through a Slack user group."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.cache import TTLCache
from bot.config import KNOWN_ROLES
from bot.errors import GroupLookupFailed, RoleDenied

logger = logging.getLogger(__name__)

GROUP_CACHE_SECONDS = 300.0
# Slack's answer to usergroups.users.list for a group ID the workspace doesn't have.
NO_SUCH_GROUP = "no_such_subteam"


class UserGroups:
    """Members of Slack user groups (`usergroups.users.list`), cached and shared by concurrent
    asks."""

    def __init__(self, client: AsyncWebClient, *, ttl: float = GROUP_CACHE_SECONDS) -> None:
        self._client = client
        self._cache: TTLCache[str, frozenset[str]] = TTLCache(ttl)

    def forget(self) -> None:
        self._cache.invalidate()

    async def members(self, group_id: str) -> frozenset[str]:
        async def load() -> frozenset[str]:
            try:
                response = await self._client.usergroups_users_list(usergroup=group_id)
            except SlackApiError as exc:
                error = str(exc.response.get("error", "unknown error"))
                if error == NO_SUCH_GROUP:
                    # A mistake in the policy file, not a passing failure: asking again won't
                    # help, so the group grants nothing and the operators hear about it.
                    logger.warning(
                        "user group %s in [roles] does not exist in this workspace (%s): it "
                        "grants nobody a role; fix [roles] in the policy file (`callbot check` "
                        "lists every ID Slack doesn't know)", group_id, error,
                    )
                    return frozenset()
                raise GroupLookupFailed(group_id, error) from None
            return frozenset(response.get("users") or ())

        return await self._cache.get(group_id, load)


class AccessControl:
    def __init__(self, roles: Mapping[str, Iterable[str]], groups: UserGroups) -> None:
        self._roles = {role: frozenset(ids) for role, ids in roles.items()}
        self._groups = groups

    def forget_groups(self) -> None:
        """Ask Slack for user groups' members afresh on the next check (a group just changed)."""
        self._groups.forget()

    async def roles_of(self, user_id: str) -> frozenset[str]:
        """Every role `user_id` holds. A failed group lookup only matters if no other path grants
        it."""
        held: set[str] = set()
        failure: GroupLookupFailed | None = None
        for role, ids in self._roles.items():
            if user_id in ids:
                held.add(role)
                continue
            for group in sorted(i for i in ids if i.startswith("S")):
                try:
                    if user_id in await self._groups.members(group):
                        held.add(role)
                        break
                except GroupLookupFailed as exc:
                    logger.warning("user group %s lookup failed: %s", group, exc.group_id)
                    failure = exc
        if not held and failure is not None:
            raise failure
        return frozenset(held)

    async def require(
        self, user_id: str, roles: Iterable[str] = KNOWN_ROLES, action: str = "place calls"
    ) -> frozenset[str]:
        wanted = tuple(roles)
        held = await self.roles_of(user_id)
        if not held.intersection(wanted):
            raise RoleDenied(wanted, action)
        return held
