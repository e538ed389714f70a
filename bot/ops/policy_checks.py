"""The policy file against the Evo Voice account: flow aliases, the default caller ID, the on-call
flow. One list, two callers: `callbot check` prints every finding, start-up stops at the first ✗
(services.check_policy_against_account), in the same words.

A failure to read the account (EvoVoiceError) is raised, not a finding: `callbot check` reports it
as a ✗ of its own, start-up tells a slow or unreachable Evo Voice from a refused set-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.config import Policy
from bot.errors import CallbotError
from bot.evovoice.catalog import Catalog
from bot.ops.findings import LIST_AT_MOST, Finding, failed, first_failure, passed, skipped
from bot.phone import mask

PolicyCheck = Callable[[Catalog, Policy, str], Awaitable[list[Finding]]]


async def flow_aliases(catalog: Catalog, policy: Policy, where: str) -> list[Finding]:
    if not policy.flows:
        return skipped("Flow aliases", "none in [flows] (flows are chosen by name)")
    flows = await catalog.flows()
    by_id = {flow.id: flow for flow in flows}
    accounts = ", ".join(catalog.account_ids)
    findings = []
    for alias, flow_id in policy.flows.items():
        flow = by_id.get(flow_id)
        if flow is not None:
            findings += passed(f"Flow alias {alias}", f"→ “{flow.name}” ({flow_id})")
            continue
        listing = ", ".join(f"{f.name} ({f.id})" for f in flows[:LIST_AT_MOST]) or "none"
        findings += failed(
            f"Flow alias {alias}",
            f"flow ID {flow_id!r} does not exist in account {accounts}",
            f"in [flows] of {where}, set {alias} to one of the account's flows or remove it; "
            f"the account's flows: {listing}",
        )
    return findings


NO_DEFAULT_CALLER_ID = "not set (Evo Voice picks one of the account's numbers)"


async def default_caller_id(catalog: Catalog, policy: Policy, where: str) -> list[Finding]:
    subject = "Default caller ID"
    if policy.default_caller_id is None:
        return skipped(subject, NO_DEFAULT_CALLER_ID)
    masked = mask(policy.default_caller_id)
    owned = await catalog.owned_numbers()
    if policy.default_caller_id not in owned:
        listing = ", ".join(owned[:LIST_AT_MOST]) or "the account owns none"
        return failed(
            subject,
            f"{masked} is not one of account {', '.join(catalog.account_ids)}'s phone numbers",
            f"set default_caller_id in {where} to one of: {listing}; or remove it",
        )
    return passed(subject, f"{masked} is valid and one of the account's numbers")


async def oncall_flow(catalog: Catalog, policy: Policy, where: str) -> list[Finding]:
    oncall = policy.oncall
    if oncall is None:
        return []  # "On-call" says so, with what the roster needs
    subject = "On-call flow"
    try:
        flow = await catalog.resolve_flow(oncall.flow)
    except CallbotError as exc:
        return failed(subject, f"{oncall.flow!r}: {exc.user_message}",
                      f"set oncall.flow in {where} to one of the account's flows (its name, "
                      "slug, [flows] alias or ID)")
    return passed(subject, f"{oncall.flow!r} → “{flow.name}” ({flow.id}); each person has "
                           f"{oncall.answer_timeout} s to "
                           + ("acknowledge" if oncall.acknowledges else "answer"))


POLICY_CHECKS: list[PolicyCheck] = [flow_aliases, default_caller_id, oncall_flow]


async def first_policy_problem(catalog: Catalog, policy: Policy, where: str) -> Finding | None:
    """The first ✗ of the policy checks, or None; EvoVoiceError if the account can't be read."""
    for check in POLICY_CHECKS:
        problem = first_failure(await check(catalog, policy, where))
        if problem is not None:
            return problem
    return None
