"""The account's flows and owned phone numbers, fetched from Evo Voice and cached briefly.

A flow is chosen by a word typed in Slack: an alias from the policy file's `[flows]`, the flow's ID,
or its name compared case-insensitively and in slug form (`wake-up-call` is "Wake Up Call").
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Mapping, Sequence

from bot.cache import TTLCache
from bot.config.fields import flow_key
from bot.errors import CallbotError, CallerIdNotOwned, FlowAmbiguous, FlowNotFound
from bot.evovoice.client import EvoVoiceClient, Flow, OwnedNumber, cannot_answer_now
from bot.phone import mask

CATALOG_CACHE_SECONDS = 60.0
# Flows and numbers change rarely: for up to an hour a stale list is served while a refresh runs,
# so a slow Evo Voice never delays a modal's validation or a command's checks. Older than that, a
# list is read afresh, and still served when Evo Voice can't answer now (`cannot_answer_now`):
# a struggling Evo Voice must not stop a page at its checks, when its POST would be tried again
# until the step's deadline (an escalation) or told "try again" (a /call).
CATALOG_MAX_STALE_SECONDS = 3600.0
# "All of them when the account has only a few": up to this many, an unknown flow lists every flow.
LIST_ALL_FLOWS_UP_TO = 10
MAX_SUGGESTIONS = 5


class Catalog:
    def __init__(
        self,
        evo: EvoVoiceClient,
        account_ids: Sequence[str],
        aliases: Mapping[str, str],
        *,
        ttl: float = CATALOG_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._evo = evo
        self._account_ids = list(account_ids)
        self._aliases = {flow_key(alias): flow_id for alias, flow_id in aliases.items()}
        # The lists' ages are read on it (a test moves it on).
        self.clock = clock
        self._flows: TTLCache[str, list[Flow]] = TTLCache(
            ttl, max_stale=CATALOG_MAX_STALE_SECONDS, stale_if_error=cannot_answer_now,
            clock=lambda: self.clock())
        self._numbers: TTLCache[str, list[OwnedNumber]] = TTLCache(
            ttl, max_stale=CATALOG_MAX_STALE_SECONDS, stale_if_error=cannot_answer_now,
            clock=lambda: self.clock())

    @property
    def account_ids(self) -> list[str]:
        return list(self._account_ids)

    def forget(self) -> None:
        """Read the flows and numbers afresh on the next request (the account just changed)."""
        self._flows.invalidate()
        self._numbers.invalidate()

    async def flows(self) -> list[Flow]:
        return await self._flows.get("flows", lambda: self._evo.list_flows(self._account_ids))

    async def owned_numbers(self) -> list[str]:
        """E.164 numbers the account owns (endpoints without a readable number are skipped)."""
        endpoints = await self._numbers.get(
            "numbers", lambda: self._evo.list_phone_numbers(self._account_ids)
        )
        return [e.phone_number for e in endpoints if e.phone_number]

    async def resolve_flow(self, text: str) -> Flow:
        flows = await self.flows()
        key = flow_key(text)
        alias_target = self._aliases.get(key)
        if alias_target is not None:
            for flow in flows:
                if flow.id == alias_target:
                    return flow
            raise CallbotError(
                f"The alias “{key}” points to flow ID {alias_target}, which the Evo Voice account "
                "does not have. Ask an administrator to fix [flows] in the policy file."
            )
        by_id = [flow for flow in flows if flow.id == text.strip()]
        if by_id:
            return by_id[0]
        matches = [flow for flow in flows if flow_key(flow.name) == key]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise FlowAmbiguous(text, [flow.name for flow in matches])
        raise FlowNotFound(text, self._suggestions(key, flows))

    def _suggestions(self, key: str, flows: Sequence[Flow]) -> list[str]:
        names = sorted({flow.name for flow in flows}, key=str.casefold)
        if len(names) <= LIST_ALL_FLOWS_UP_TO:
            return names
        by_key = {flow_key(name): name for name in names}
        close = difflib.get_close_matches(key, list(by_key), n=MAX_SUGGESTIONS, cutoff=0.4)
        starts = [k for k in by_key if key and (k.startswith(key) or key in k)]
        ordered = list(dict.fromkeys(close + starts))[:MAX_SUGGESTIONS]
        return [by_key[k] for k in ordered]

    async def search_flows(self, query: str, limit: int) -> list[Flow]:
        """Flows for a search box: best matches first (see `rank_flows`), at most `limit`."""
        return rank_flows(await self.flows(), query, limit, self._aliases)

    async def check_caller_id(self, e164: str, *, default: bool = False) -> None:
        """Raise CallerIdNotOwned unless the account owns `e164` (`default`: the policy's)."""
        owned = await self.owned_numbers()
        if e164 not in owned:
            raise CallerIdNotOwned(mask(e164), owned, default=default)


def rank_flows(
    flows: Sequence[Flow], query: str, limit: int, aliases: Mapping[str, str] | None = None
) -> list[Flow]:
    """The flows matching `query`, best first: exact name (or alias, or ID), then names starting
    with it, then a word starting with it, then containing it (also with spaces ignored, so
    `wakeup` finds "Wake Up Call"). Compared as `flow_key`s; ties in name order. Empty: all."""
    key = flow_key(query)
    squeezed = key.replace(" ", "")
    by_alias: dict[str, int] = {}
    for alias, flow_id in (aliases or {}).items():
        if key and alias == key:
            by_alias[flow_id] = 0
        elif key and alias.startswith(key):
            by_alias.setdefault(flow_id, 1)

    def rank(flow: Flow) -> int | None:
        name = flow_key(flow.name)
        if not key:
            return 0
        found = [by_alias[flow.id]] if flow.id in by_alias else []
        if name == key or flow.id == query.strip():
            found.append(0)
        elif name.startswith(key):
            found.append(1)
        elif f" {key}" in f" {name}":
            found.append(2)
        elif key in name:
            found.append(3)
        elif squeezed and squeezed in name.replace(" ", ""):
            found.append(4)
        return min(found) if found else None

    ranked = [(r, flow_key(f.name), f.id, f) for f in flows if (r := rank(f)) is not None]
    ranked.sort(key=lambda item: item[:3])
    return [item[3] for item in ranked[:max(limit, 0)]]
