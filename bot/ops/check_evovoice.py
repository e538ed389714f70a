"""`callbot check`: the Evo Voice login, its role and account, the policy against the account."""

from __future__ import annotations

from bot.config import KNOWN_ROLES, ConfigError, OnCallPolicy
from bot.evovoice.catalog import Catalog
from bot.evovoice.client import (
    HANG_UP_ROLE,
    AuthStatus,
    BadLogin,
    EvoVoiceError,
    EvoVoiceUnreachable,
    MalformedResponse,
)
from bot.ops import policy_checks
from bot.ops.checkup import Checkup
from bot.ops.findings import Finding, Status, failed, passed, skipped, unreachable
from bot.phone import mask
from bot.services import API_HOSTS, choose_account, login_works_at

HANG_UP_SUBJECT = "Evo Voice hang-up"


async def check_evovoice_login(c: Checkup) -> list[Finding]:
    subject = "Evo Voice login"
    if c.settings is None:
        return skipped(subject, "not checked (fix the settings first)")
    user, url = c.settings.evovoice_username, c.settings.evovoice_url
    if c.settings.evovoice_mode == "simulate":
        return skipped(subject, "not used: EVOVOICE_MODE=simulate, calls go to a simulated account "
                                "inside the bot (set EVOVOICE_MODE=live to check the real one)")
    try:
        status = await c.evo().auth_status()
    except BadLogin:
        works_at = await login_works_at(c.settings)
        if works_at is not None:
            return failed(subject, f"{url} refused the login {user!r}; your login works at "
                                   f"{works_at}", f"set EVOVOICE_URL={works_at}")
        return failed(subject, f"Evo Voice refused the login {user!r} at {url}",
                      f"check EVOVOICE_USERNAME and EVOVOICE_PASSWORD by logging in at {url}, and "
                      f"that EVOVOICE_URL is the host the login belongs to ({API_HOSTS})")
    except EvoVoiceUnreachable as exc:
        return unreachable(subject, url, exc, f"cannot connect to {url}",
                           f"check EVOVOICE_URL ({API_HOSTS}) and that this host may make "
                           "outgoing HTTPS connections")
    except MalformedResponse as exc:
        # What start-up waits for: a maintenance page, or a URL that is no API (start_up_error).
        return failed(subject, f"GET /auth/status failed: {exc.message}",
                      "try again later: a maintenance page passes on its own; if it lasts, check "
                      f"that EVOVOICE_URL ({url}) is the Evo Voice API ({API_HOSTS})")
    except EvoVoiceError as exc:
        return failed(subject, f"GET /auth/status failed: {exc.message}",
                      f"check EVOVOICE_URL ({url}) points at the Evo Voice API; try again later")
    c.auth_status = status
    if c.evo().login.method == "credentials":
        return passed(subject, f"{user!r} logs in at {url} with POST /auth/credentials and its "
                               "session (this server does not accept HTTP Basic)")
    return passed(subject, f"{user!r} logs in at {url}")


async def check_evovoice_role(c: Checkup) -> list[Finding]:
    subject = "Evo Voice role"
    if c.auth_status is None or c.settings is None:
        return skipped(subject, "not checked (needs a working Evo Voice login)")
    held = [role for role in KNOWN_ROLES if role in c.auth_status.roles]
    if not held:
        roles = ", ".join(c.auth_status.roles) or "none"
        return failed(
            subject, f"{c.settings.evovoice_username!r} holds neither Manager nor "
            f"SystemAdministrator (its roles: {roles}); placing calls needs one",
            "grant that Evo Voice user the Manager role on the account",
        )
    c.login_has_role = True
    return passed(subject, f"{c.settings.evovoice_username!r} holds {', '.join(held)}") + (
        _hang_up_way(c.auth_status)
    )


def _hang_up_way(status: AuthStatus) -> list[Finding]:
    """Which way Hang up, Stop escalation and the chain's no-answer hang-up will go (never a ✗:
    either way ends calls)."""
    subject = HANG_UP_SUBJECT
    if HANG_UP_ROLE in status.roles:
        return passed(subject, f"with EndSession (DELETE /sessions/{{id}}): the login holds "
                               f"{HANG_UP_ROLE}; PatchSession is the fallback")
    return passed(
        subject, f"with PatchSession (PATCH /sessions/{{id}} callState=Disconnected): the login "
        f"lacks {HANG_UP_ROLE}, which EndSession requires; granting {HANG_UP_ROLE} makes "
        "EndSession available too (nothing to fix)",
    )


async def check_evovoice_account(c: Checkup) -> list[Finding]:
    subject = "Evo Voice account"
    if not c.login_has_role or c.settings is None or c.auth_status is None:
        return skipped(subject, "not checked (needs a working Evo Voice login with its role)")
    try:
        c.account_id = await choose_account(c.evo(), c.settings)
    except ConfigError as exc:
        if not c.auth_status.account_ids:
            fix = "give the Evo Voice user access to the account callbot should use"
        else:
            fix = "set EVOVOICE_ACCOUNT_ID to one of the accounts listed"
        return [Finding(Status.FAIL, subject, problem, fix) for problem in exc.problems]
    # A shorter list of names leaves the last accounts unnamed, not unchecked.
    names = dict(zip(c.auth_status.account_ids, c.auth_status.account_names, strict=False))
    name = names.get(c.account_id)
    return passed(subject, f"{c.account_id}" + (f" ({name})" if name else ""))


async def check_flow_aliases(c: Checkup) -> list[Finding]:
    if c.account_id is None or c.policy is None:
        return skipped("Flow aliases",
                       "not checked (needs the Evo Voice account and the policy file)")
    c.catalog = Catalog(c.evo(), [c.account_id], c.policy.flows)
    return await _against_account(c, policy_checks.flow_aliases, "Flow aliases", "flows")


async def check_default_caller_id(c: Checkup) -> list[Finding]:
    subject = "Default caller ID"
    if c.policy is None:
        return skipped(subject, "not checked (fix the policy file first)")
    if c.catalog is None:
        # Without the account (a simulated one, or a login that failed) there is nothing to check
        # an unset caller ID against, and nothing to fix.
        if c.policy.default_caller_id is None:
            return skipped(subject, policy_checks.NO_DEFAULT_CALLER_ID)
        return skipped(subject, "not checked (needs the Evo Voice account)")
    return await _against_account(c, policy_checks.default_caller_id, subject, "phone numbers")


async def check_oncall(c: Checkup) -> list[Finding]:
    """The escalation flow, and where each person's phone number comes from."""
    if c.policy is None:
        return skipped("On-call", "not checked (fix the policy file first)")
    oncall = c.policy.oncall
    if oncall is None:
        return skipped("On-call", "no [oncall] section: nobody to escalate to (the Escalate to "
                                  "on-call shortcuts say how to set one up)")
    if c.catalog is None:
        findings = skipped("On-call flow", "not checked (needs the Evo Voice account)")
    else:
        findings = await _against_account(c, policy_checks.oncall_flow, "On-call flow", "flows")
    findings += passed("On-call acknowledgement", acknowledgement_rule(oncall))
    who = ("every full member of the workspace (no guests, nobody from another organisation)"
           if isinstance(oncall.responders, str) else
           f"{len(oncall.responders)} listed user(s) and group(s)")
    findings += passed("On-call responders", f"{who}, the rotation and role holders may "
                                             f"escalate; without a role, "
                                             f"{oncall.escalations_per_person.text} each")
    places = {user: "rotation" for user in oncall.rotation}
    for user in oncall.escalate_to:
        places.setdefault(user, "escalate_to")
    for user in c.policy.people:
        places.setdefault(user, "in neither the rotation nor escalate_to")
    for user, place in places.items():
        subject = f"On-call number {user}"
        number = c.policy.people.get(user)
        if number is not None:
            # Checked against the dialling rules when the policy file was read.
            findings += passed(subject, f"{mask(number)} from [people] ({place})")
        else:
            findings += skipped(subject, f"not in [people]: read from their Slack profile when "
                                         f"they are called ({place}); without a usable number "
                                         "there they are skipped")
    return findings


def acknowledgement_rule(oncall: OnCallPolicy) -> str:
    """Which rule ends an escalation step, in words (`[oncall] ack`, `ack_outcomes`)."""
    if not oncall.acknowledges:
        return ('ack = "answer": a step ends when its call connects (a voicemail counts); '
                "I'm on it ends it too")
    outcomes = ", ".join(f"“{o}”" for o in oncall.ack_outcomes)
    by_call = (f", or the call's outcome {outcomes}" if outcomes else
               "; no flow outcome counts (ack_outcomes is empty)")
    return (f'ack = "acknowledge": a step ends on I\'m on it{by_call}; a call answered but not '
            "acknowledged moves on")


async def _against_account(
    c: Checkup, check: policy_checks.PolicyCheck, subject: str, what: str
) -> list[Finding]:
    """One of the policy checks start-up makes too (policy_checks.py), on this checkup."""
    assert c.catalog is not None and c.policy is not None
    try:
        return await check(c.catalog, c.policy, str(c.policy_path))
    except EvoVoiceError as exc:
        return failed(subject, f"reading the account's {what} failed: {exc.message}",
                      "try again; if it persists, check the Evo Voice user's access to the account")
