"""Who may do what: roles from the policy file, held directly or through a Slack user group; and
who may escalate to on-call and see the rotation (responders).

    AccessControl   roles (Manager, SystemAdministrator): dialling any number, /call history, …
    Responders      escalating to on-call, `/call oncall`, acknowledging a page. A responder is:
                      - a role holder, or a member of the rotation or `escalate_to`: always;
                      - with `[oncall] responders = "everyone"` (the default): every full member
                        of the workspace (users.info: not a guest, not deactivated, not a bot,
                        not from another organisation through Slack Connect);
                      - else: the users and the members of the user groups it lists (a guest or
                        an external person only this way, by being listed).
                    Slack's answers are cached (RESPONDER_CACHE_SECONDS), then used while Slack
                    is asked again, up to GROUP_STALE_SECONDS old: a person removed from a group
                    or made a guest is refused within minutes, once Slack has answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.cache import TTLCache
from bot.config import KNOWN_ROLES, RESPONDERS_EVERYONE, OnCallPolicy
from bot.errors import GroupLookupFailed, MembershipUnknown, NotAResponder, RoleDenied
from bot.slack.lanes import retry_after, without_rate_limit_waits
from bot.slack.notify import SLACK_FAILURES, slack_error_code

logger = logging.getLogger(__name__)

GROUP_CACHE_SECONDS = 300.0
# The lease keeper's rounds read the groups [roles] and `responders` name again once their members
# are this old (before GROUP_CACHE_SECONDS), a pass a minute at most (the first a minute after
# start): once read, a group's members never go stale while Slack answers, so a check after a
# quiet spell never waits on Slack for them; a Slack failing is asked once a minute.
GROUP_KEEP_FRESH_AFTER = 180.0
GROUP_KEEP_FRESH_EVERY = 60.0
# Past GROUP_CACHE_SECONDS, a group's members are still used, up to this age, while one request asks
# Slack again in the background: a role check on the way to a dial never waits on Slack for a group
# read minutes ago (a removal takes effect once Slack has answered that request).
GROUP_STALE_SECONDS = 900.0
RESPONDER_CACHE_SECONDS = 300.0
# Slack's answer to usergroups.users.list for a group ID the workspace doesn't have.
NO_SUCH_GROUP = "no_such_subteam"


class UserGroups:
    """Members of Slack user groups (`usergroups.users.list`), cached and shared by concurrent
    asks. A 429 is not waited out (slack_sdk's way would hold the call behind it for twice its
    Retry-After): the person is told when to try again."""

    def __init__(
        self, client: AsyncWebClient, *, ttl: float = GROUP_CACHE_SECONDS,
        max_stale: float = GROUP_STALE_SECONDS, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = without_rate_limit_waits(client)
        # The clock members' ages are read on (public: a test may move it on).
        self.clock = clock
        self._cache: TTLCache[str, frozenset[str]] = TTLCache(ttl, max_stale=max_stale,
                                                              clock=lambda: self.clock())
        self._next_pass = clock() + GROUP_KEEP_FRESH_EVERY

    def forget(self) -> None:
        self._cache.invalidate()

    async def members(self, group_id: str) -> frozenset[str]:
        return await self._cache.get(group_id, partial(self._load, group_id))

    def keep_fresh(self, group_ids: Iterable[str]) -> None:
        """Read `group_ids` again in the background, those read GROUP_KEEP_FRESH_AFTER ago or
        more (one never read is read by the first check that needs it); a pass every
        GROUP_KEEP_FRESH_EVERY at most (the lease keeper's rounds call it)."""
        now = self.clock()
        if now < self._next_pass:
            return
        self._next_pass = now + GROUP_KEEP_FRESH_EVERY
        for group_id in group_ids:
            self._cache.keep_fresh(group_id, partial(self._load, group_id),
                                   due_after=GROUP_KEEP_FRESH_AFTER)

    def age(self, group_id: str) -> float | None:
        """Seconds since the group's members were read; None if never."""
        return self._cache.age(group_id)

    async def _load(self, group_id: str) -> frozenset[str]:
        try:
            response = await self._client.usergroups_users_list(usergroup=group_id)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown error"))
            if error == NO_SUCH_GROUP:
                # A mistake in the policy file, not a passing failure: asking again won't help,
                # so the group grants nothing and the operators hear about it.
                logger.warning(
                    "user group %s in [roles] does not exist in this workspace (%s): it grants "
                    "nobody a role; fix [roles] in the policy file (`callbot check` lists every "
                    "ID Slack doesn't know)", group_id, error,
                )
                return frozenset()
            raise GroupLookupFailed(group_id, error, retry_after(exc)) from None
        return frozenset(response.get("users") or ())


class AccessControl:
    def __init__(self, roles: Mapping[str, Iterable[str]], groups: UserGroups) -> None:
        self._roles = {role: frozenset(ids) for role, ids in roles.items()}
        self._groups = groups

    def group_ids(self) -> list[str]:
        """The user groups that grant a role."""
        return sorted({i for ids in self._roles.values() for i in ids if i.startswith("S")})

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
                    logger.warning("user group %s lookup failed: %s", group, exc.reason)
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


class Responders:
    """Who may escalate to on-call, see the rotation and acknowledge a page (see the module)."""

    def __init__(
        self,
        access: AccessControl,
        groups: UserGroups,
        client: AsyncWebClient,
        policy: OnCallPolicy | None,
        *,
        ttl: float = RESPONDER_CACHE_SECONDS,
        max_stale: float = GROUP_STALE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._access = access
        self._groups = groups
        # As for user groups: a 429 is told (when to try again), not waited out before the page.
        self._client = without_rate_limit_waits(client)
        self._policy = policy
        # As a group's members: an escalation doesn't wait on Slack for someone read minutes ago.
        self._members: TTLCache[str, bool] = TTLCache(ttl, max_stale=max_stale, clock=clock)
        # This workspace's team and, in an Enterprise Grid, its organisation (auth.test).
        self._team: TTLCache[str, tuple[str, str]] = TTLCache(24 * 3600.0, clock=clock)

    async def keep_groups_fresh(self) -> None:
        """A lease keeper's round: the user groups of [roles] and `responders`, read again before
        their members go stale (UserGroups.keep_fresh)."""
        policy = self._policy
        listed = () if policy is None or isinstance(policy.responders, str) else policy.responders
        self._groups.keep_fresh([*self._access.group_ids(), *(i for i in listed if i[0] == "S")])

    @property
    def everyone(self) -> bool:
        return self._policy is None or self._policy.responders == RESPONDERS_EVERYONE

    async def require(self, user_id: str, action: str = "escalate to on-call") -> bool:
        """NotAResponder unless `user_id` is a responder; True when they hold a role (their
        escalations are not limited)."""
        try:
            if await self._access.roles_of(user_id):
                return True
        except GroupLookupFailed:
            pass  # a role is one way in; the others may still let them in
        if self._policy is not None and user_id in (
            *self._policy.rotation, *self._policy.escalate_to
        ):
            return False
        try:
            if await self._listed(user_id) or (
                self.everyone and await self._full_member(user_id)
            ):
                return False
        except MembershipUnknown as exc:  # told for what the person asked to do
            raise MembershipUnknown(exc.reason, action, exc.retry_after) from None
        raise NotAResponder(action, listed_only=not self.everyone)

    async def allows(self, user_id: str) -> bool | None:
        """Whether `user_id` may escalate (`require`, answered); None when Slack can't say now (a
        user group it won't list, users.info failing): no "you may not" for anyone to be told."""
        try:
            await self.require(user_id)
        except NotAResponder:
            return False
        except (GroupLookupFailed, MembershipUnknown):
            return None
        return True

    async def _listed(self, user_id: str) -> bool:
        if self._policy is None or isinstance(self._policy.responders, str):
            return False
        listed = self._policy.responders
        if user_id in listed:
            return True
        failure: GroupLookupFailed | None = None
        for group in (i for i in listed if i.startswith("S")):
            try:
                if user_id in await self._groups.members(group):
                    return True
            except GroupLookupFailed as exc:
                failure = exc
        if failure is not None:
            raise failure
        return False

    async def _full_member(self, user_id: str) -> bool:
        """A person of this workspace's own organisation, neither a guest nor deactivated."""

        async def load() -> bool:
            team, enterprise = await self._team.get("team", self._own_team)
            try:
                response = await self._client.users_info(user=user_id)
            except SLACK_FAILURES as exc:
                logger.warning("users.info for %s failed (%s): not counted as a responder",
                               user_id, slack_error_code(exc))
                raise _unknown(exc) from None
            user = response.get("user")
            if not isinstance(user, dict):
                return False
            refused = [flag for flag in ("deleted", "is_bot", "is_restricted",
                                         "is_ultra_restricted", "is_stranger") if user.get(flag)]
            if team and user.get("team_id") not in (None, team) and not (
                enterprise and _enterprise_of(user) == enterprise
            ):  # of another organisation, not of another workspace of this Enterprise Grid
                refused.append("another organisation")
            if refused:
                logger.info("%s is not a full member (%s)", user_id, ", ".join(refused))
            return not refused

        return await self._members.get(user_id, load)

    async def _own_team(self) -> tuple[str, str]:
        try:
            response = await self._client.auth_test()
        except SLACK_FAILURES as exc:
            # Not "no team": that would be cached for a day, and meanwhile everyone from another
            # organisation would count as a full member. Failing, nothing is cached: the person
            # is told to try again, and the next check asks Slack again.
            logger.warning("auth.test failed (%s): nobody is counted as a full member for now",
                           slack_error_code(exc))
            raise _unknown(exc) from None
        team, enterprise = response.get("team_id"), response.get("enterprise_id")
        return (team if isinstance(team, str) else "",
                enterprise if isinstance(enterprise, str) else "")


def _unknown(exc: Exception) -> MembershipUnknown:
    """Slack's failure to say who someone is; with a 429, when it will answer again."""
    wait = retry_after(exc) if isinstance(exc, SlackApiError) else None
    return MembershipUnknown(slack_error_code(exc), retry_after=wait)


def _enterprise_of(user: dict[str, Any]) -> object:
    """The Enterprise Grid organisation a user object names (`enterprise_user`), if any."""
    grid = user.get("enterprise_user")
    return grid.get("enterprise_id") if isinstance(grid, dict) else None
