"""`callbot check`: what the bot will ask Evo Voice in production, tried in a harmless form.

The flows and phone-number listings and a session lookup, each with the exact parameters the bot
sends (the client builds them in one place for both), for a number no call goes to. Only GETs:
nothing is dialled, bought or ended. Each ✗ says which setting or Evo Voice role to fix.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.evovoice.client import BadRequest, EvoVoiceError, Forbidden, MissingRole
from bot.ops.checkup import Checkup
from bot.ops.findings import Finding, failed, passed, skipped
from bot.phone import mask

# A number no call goes to (555-01xx is reserved for fiction): the session lookup is tried with
# the exact parameters the bot uses, and must come back empty.
PROBE_NUMBER = "+15555550199"


async def check_evovoice_requests(c: Checkup) -> list[Finding]:
    """The listings and the session lookup, exactly as the bot sends them; nothing dialled."""
    if c.account_id is None:
        return skipped("Evo Voice requests", "not checked (needs the Evo Voice account)")
    evo, accounts = c.evo(), [c.account_id]
    findings: list[Finding] = []
    subject = "Evo Voice flows listing"
    query = evo.list_query("/flows", {"accountIds": c.account_id})
    try:
        flows = await evo.list_flows(accounts)
    except EvoVoiceError as exc:
        findings += _request_failed(subject, "GET /flows", query, exc)
    else:
        findings += passed(subject, f"GET /flows?{_query(query)}: {len(flows)} flows")
    subject = "Evo Voice phone numbers"
    query = evo.list_query("/endpoints", {"type": "PhoneNumber", "accountIds": c.account_id})
    try:
        endpoints = await evo.list_phone_numbers(accounts)
    except EvoVoiceError as exc:
        findings += _request_failed(subject, "GET /endpoints", query, exc)
    else:
        numbers = [e.phone_number for e in endpoints if e.phone_number]
        if endpoints and not numbers:
            seen = sorted({name for e in endpoints for name in e.fields_seen})
            findings += failed(
                subject, f"{len(endpoints)} phone-number endpoints, but none has an E.164 number "
                f"in phoneNumber or displayName (fields seen: {', '.join(seen) or 'none'})",
                "caller IDs can't be checked or offered; report these field names to the callbot "
                "maintainers, and leave default_caller_id unset meanwhile",
            )
        else:
            findings += passed(subject, f"GET /endpoints?{_query(query)}: {len(numbers)} numbers"
                               + ("" if numbers else " (the account owns none)"))
    subject = "Evo Voice session lookup"
    since = datetime.now(UTC)
    query = evo.find_sessions_query(accounts, PROBE_NUMBER, since)
    shown = _query(query).replace(PROBE_NUMBER, mask(PROBE_NUMBER))
    try:
        found = await evo.find_sessions(accounts, to=PROBE_NUMBER, since=since)
    except EvoVoiceError as exc:
        findings += _request_failed(subject, "GET /sessions", query, exc)
    else:
        if "sortField" in query and not evo.sorts_sessions:
            unsorted = evo.find_sessions_query(accounts, PROBE_NUMBER, since)
            shown = (f"{_query(unsorted)} (sortField={query['sortField']} was refused: the bot "
                     "looks sessions up unsorted)").replace(PROBE_NUMBER, mask(PROBE_NUMBER))
        findings += passed(subject, f"GET /sessions?{shown}: answers ({len(found)} sessions), "
                                    "so a call whose answer was lost can be found")
    return findings


def _query(query: dict[str, str]) -> str:
    return "&".join(f"{key}={value}" for key, value in query.items())


def _request_failed(
    subject: str, request: str, query: dict[str, str], exc: EvoVoiceError
) -> list[Finding]:
    sent = f"{request} (with {', '.join(query)})"
    if isinstance(exc, MissingRole):
        return failed(subject, f"{sent}: 403 Invalid Role",
                      "grant the bot's Evo Voice user the Manager role on the account")
    if isinstance(exc, Forbidden):
        return failed(subject, f"{sent}: 403 {exc.message} (not a missing role)",
                      "the server turned the request away for another reason than a role: check "
                      "EVOVOICE_URL, and whether a proxy or firewall rewrites requests")
    if isinstance(exc, BadRequest):
        fields = "; ".join(f"{e.field_name}: {e.message}" for e in exc.field_errors if e.field_name)
        return failed(subject, f"{sent}: 400 {exc.message}" + (f" ({fields})" if fields else ""),
                      "Evo Voice does not accept these parameters: report this to the callbot "
                      "maintainers with this line")
    return failed(subject, f"{sent}: {exc.message}",
                  "try again; if it persists, check the Evo Voice user's access to the account")


