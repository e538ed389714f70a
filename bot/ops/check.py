"""`callbot check`: reads the configuration and tries it against Slack, Evo Voice and the database.

One line per check: ✓ when it holds, ✗ with a fix when it doesn't, – when it was not checked (not
used in this mode, or waiting on an earlier ✗). The exit code is 0 only when nothing failed.

The doctor changes nothing: it calls `auth.test` and `apps.connections.open` (no websocket is
opened), reads from Evo Voice with GETs, and opens the database read-only, without migrating.

Checks run in order over one `Checkup`, which carries what earlier checks established (settings,
clients, the account). To add one, write `async def check_x(c: Checkup) -> list[Finding]` and put it
in `CHECKS`; README's troubleshooting section is keyed by each check's subject.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.app import SLACK_TIMEOUT_SECONDS, create_slack_client
from bot.config import (
    DEFAULT_POLICY_PATH,
    KNOWN_ROLES,
    ConfigError,
    Policy,
    Settings,
    load_policy,
    load_settings,
)
from bot.errors import CallbotError
from bot.evovoice.catalog import Catalog
from bot.evovoice.client import (
    AuthStatus,
    BadLogin,
    EvoVoiceClient,
    EvoVoiceError,
    EvoVoiceUnreachable,
    Flow,
)
from bot.phone import mask
from bot.services import check_policy_against_account, choose_account
from bot.storage.database import MIGRATIONS, POSTGRESQL, Database, dialect_of, sqlite_path

EXIT_OK = 0
EXIT_PROBLEMS = 1

SCOPES_HEADER = "x-oauth-scopes"
# Scope → what needs it; usergroups:read only when [roles] lists user groups.
REQUIRED_SCOPES = {
    "commands": "the /call command",
    "chat:write": "posting confirmations",
    "users:read": "reading people's profiles",
}
GROUP_SCOPE = "usergroups:read"
LIST_AT_MOST = 10
WAITING = "not checked"  # a skipped check's detail starts so when it waits on an earlier ✗

_SETTING_FIXES = {
    "SLACK_BOT_TOKEN": "copy the Bot User OAuth Token (xoxb-…) from the Slack app's OAuth & "
    "Permissions page into .env or the environment",
    "SLACK_APP_TOKEN": "create an app-level token with the connections:write scope (Basic "
    "Information → App-Level Tokens), or leave it empty for HTTP mode",
    "SLACK_SIGNING_SECRET": "copy the Signing Secret from the Slack app's Basic Information page, "
    "or set SLACK_APP_TOKEN to use Socket Mode",
    "EVOVOICE_USERNAME": "set the bot's own Evo Voice login (a user holding the Manager role)",
    "EVOVOICE_PASSWORD": "set the password of the bot's Evo Voice login",
}


class Status(StrEnum):
    PASS = "✓"
    FAIL = "✗"
    SKIP = "–"


@dataclass(frozen=True)
class Finding:
    status: Status
    subject: str  # stable: README's troubleshooting is keyed by it
    detail: str
    fix: str | None = None

    def render(self) -> str:
        line = f"{self.status.value} {self.subject}: {self.detail}"
        return line + (f"\n    fix: {self.fix}" if self.fix else "")


def passed(subject: str, detail: str) -> list[Finding]:
    return [Finding(Status.PASS, subject, detail)]


def failed(subject: str, detail: str, fix: str) -> list[Finding]:
    return [Finding(Status.FAIL, subject, detail, fix)]


def skipped(subject: str, why: str) -> list[Finding]:
    return [Finding(Status.SKIP, subject, why)]


@dataclass
class Checkup:
    """What the checks share; each check fills in what later ones need."""

    overrides: dict[str, Any] = field(default_factory=dict)
    settings: Settings | None = None
    policy: Policy | None = None
    policy_path: Path | None = None
    identity: AsyncSlackResponse | None = None
    auth_status: AuthStatus | None = None
    login_has_role: bool = False
    account_id: str | None = None
    catalog: Catalog | None = None
    flows: list[Flow] | None = None
    item_failures: int = 0  # ✗ among the policy-against-account checks
    _http: aiohttp.ClientSession | None = None
    _slack: AsyncWebClient | None = None
    _evo: EvoVoiceClient | None = None

    def slack(self) -> AsyncWebClient:
        assert self.settings is not None
        if self._slack is None:
            self._http = aiohttp.ClientSession()
            self._slack = create_slack_client(self.settings, self._http)
        return self._slack

    def evo(self) -> EvoVoiceClient:
        assert self.settings is not None
        if self._evo is None:
            self._evo = EvoVoiceClient(
                self.settings.evovoice_url,
                self.settings.evovoice_username,
                self.settings.evovoice_password.get_secret_value(),
                timeout=httpx.Timeout(self.settings.evovoice_timeout, connect=5.0),
            )
        return self._evo

    async def close(self) -> None:
        if self._evo is not None:
            await self._evo.aclose()
        if self._http is not None:
            await self._http.close()


Check = Callable[[Checkup], Awaitable[list[Finding]]]

# ------------------------------------------------------------------------------- configuration


async def check_settings(c: Checkup) -> list[Finding]:
    try:
        c.settings = load_settings(**c.overrides)
    except ConfigError as exc:
        return [_setting_problem(problem) for problem in exc.problems]
    mode = "Socket Mode" if c.settings.socket_mode else "HTTP mode"
    return passed("Settings", f"complete and well-formed ({mode})")


def _setting_problem(problem: str) -> Finding:
    name, sep, message = problem.partition(": ")
    if sep and name.replace("_", "").isalnum() and name.isupper():
        fix = _SETTING_FIXES.get(name, "fix it in .env or the environment (.env.example lists "
                                       "every setting)")
        return Finding(Status.FAIL, f"Setting {name}", message, fix)
    return Finding(Status.FAIL, "Settings", problem,
                   "fix it in .env or the environment (.env.example lists every setting)")


async def check_policy(c: Checkup) -> list[Finding]:
    if c.settings is not None:
        path = c.settings.callbot_config
    else:
        path = Path(c.overrides.get("callbot_config") or os.environ.get("CALLBOT_CONFIG")
                    or DEFAULT_POLICY_PATH)
    c.policy_path = path
    try:
        c.policy = load_policy(path)
    except ConfigError as exc:
        if not path.exists():
            fix = (f"copy callbot.example.toml to {path} and list who may call, or point "
                   "CALLBOT_CONFIG at the policy file")
        else:
            fix = f"edit {path} (callbot.example.toml shows every key)"
        return [Finding(Status.FAIL, "Policy file", problem, fix) for problem in exc.problems]
    callers = sum(len(ids) for ids in c.policy.roles.values())
    findings = passed(
        "Policy file",
        f"{path} is valid ({_count(callers, 'Slack user or group', 'Slack users or groups')} "
        f"may call, {_count(len(c.policy.flows), 'flow alias', 'flow aliases')})",
    )
    examples = {slack_id: places for slack_id, places in policy_slack_ids(c.policy).items()
                if is_example_id(slack_id)}
    if examples:
        findings += failed(
            "Example IDs",
            "still the placeholders of callbot.example.toml: " + _listing(examples),
            f"in {path}, replace them with your people's member IDs (Slack: a profile's ⋮ menu → "
            "Copy member ID) or user group IDs, or let `callbot init` look them up by email",
        )
    return findings


def is_example_id(slack_id: str) -> bool:
    """callbot.example.toml's IDs all say EXAMPLE: real Slack IDs are random letters and digits."""
    return "EXAMPLE" in slack_id


def policy_slack_ids(policy: Policy) -> dict[str, list[str]]:
    """Every Slack user or group ID the policy file names, with where it names it."""
    places: dict[str, list[str]] = {}
    for role, ids in policy.roles.items():
        for slack_id in ids:
            places.setdefault(slack_id, []).append(f"[roles] {role}")
    for slack_id in policy.people:
        places.setdefault(slack_id, []).append("[people]")
    if policy.oncall is not None:
        for slack_id in policy.oncall.rotation:
            places.setdefault(slack_id, []).append("oncall.rotation")
        for slack_id in policy.oncall.escalate_to:
            places.setdefault(slack_id, []).append("oncall.escalate_to")
    return places


def _listing(places: dict[str, list[str]]) -> str:
    return "; ".join(f"{slack_id} ({', '.join(where)})" for slack_id, where in places.items())


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# ------------------------------------------------------------------------------------- Slack


async def check_slack_token(c: Checkup) -> list[Finding]:
    subject = "Slack bot token"
    if c.settings is None:
        return skipped(subject, "not checked (fix the settings first)")
    try:
        c.identity = await c.slack().auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown error")
        return failed(subject, f"Slack refused it ({error})", _SETTING_FIXES["SLACK_BOT_TOKEN"]
                      + "; a reinstalled app or a revoked token needs the new token")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return failed(
            subject, f"cannot reach {c.settings.slack_api_url} ({type(exc).__name__})",
            "check SLACK_API_URL (normally https://slack.com/api/) and that this host may make "
            "outgoing HTTPS connections",
        )
    team, user = c.identity.get("team"), c.identity.get("user")
    return passed(subject, f"valid (workspace {team}, bot user @{user})")


async def check_slack_scopes(c: Checkup) -> list[Finding]:
    subject = "Slack scopes"
    if c.identity is None or c.policy is None:
        return skipped(subject, "not checked (needs a valid bot token and policy file)")
    granted = _granted_scopes(c.identity)
    if granted is None:
        return failed(
            subject, f"Slack did not say which scopes the token has (no {SCOPES_HEADER} header)",
            "make SLACK_API_URL point at Slack's Web API directly; a proxy may drop the header",
        )
    needed = dict(REQUIRED_SCOPES)
    groups = sorted({m for ids in c.policy.roles.values() for m in ids if m.startswith("S")})
    if groups:
        needed[GROUP_SCOPE] = f"roles given to user groups: {', '.join(groups)}"
    missing = [scope for scope in needed if scope not in granted]
    if missing:
        return failed(
            subject, "the bot token lacks " + ", ".join(f"{scope} ({needed[scope]})"
                                                          for scope in missing),
            "add them under OAuth & Permissions → Bot Token Scopes (manifest.yml lists every "
            "scope callbot uses), then reinstall the app to the workspace",
        )
    return passed(subject, "granted: " + ", ".join(sorted(needed)))


def _granted_scopes(response: AsyncSlackResponse) -> set[str] | None:
    for name, value in (response.headers or {}).items():
        if name.lower() == SCOPES_HEADER:
            return {scope.strip() for scope in str(value).split(",") if scope.strip()}
    return None


async def check_slack_ids(c: Checkup) -> list[Finding]:
    """Every user and group the policy file names exists (a typo grants none)."""
    subject = "Slack IDs"
    if c.identity is None or c.policy is None:
        return skipped(subject, "not checked (needs a valid bot token and policy file)")
    places = {slack_id: where for slack_id, where in policy_slack_ids(c.policy).items()
              if not is_example_id(slack_id)}  # already a ✗ of their own
    if not places:
        return skipped(subject, "none to look up")
    team = c.identity.get("team")
    findings: list[Finding] = []
    users = groups = 0
    for slack_id, where in places.items():
        problem = await _slack_id_problem(c.slack(), slack_id)
        if problem is None:
            groups += slack_id.startswith("S")
            users += not slack_id.startswith("S")
            continue
        findings.append(Finding(
            Status.FAIL, subject, f"{slack_id}: {problem} (listed in {', '.join(where)})",
            f"in {c.policy_path}, replace it with the right member ID (a profile's ⋮ menu → Copy "
            "member ID) or user group ID, or remove it",
        ))
    if not findings:
        findings += passed(subject, f"{_count(users, 'user', 'users')} and "
                                    f"{_count(groups, 'user group', 'user groups')} found in "
                                    f"workspace {team}")
    return findings


async def _slack_id_problem(slack: AsyncWebClient, slack_id: str) -> str | None:
    """What is wrong with a user or group ID, in words; None when it names someone who can act."""
    try:
        if slack_id.startswith("S"):
            await slack.usergroups_users_list(usergroup=slack_id)
            return None
        user = (await slack.users_info(user=slack_id)).get("user") or {}
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown error")
        if error == "no_such_subteam":
            return "no user group of this workspace has this ID (no_such_subteam)"
        if error == "user_not_found":
            return "no user of this workspace has this ID (user_not_found)"
        return f"could not be looked up ({error})"
    if user.get("deleted"):
        return "this user is deactivated"
    return None


async def check_socket_mode_token(c: Checkup) -> list[Finding]:
    subject = "Socket Mode token"
    if c.settings is None:
        return skipped(subject, "not checked (fix the settings first)")
    if c.settings.slack_app_token is None:
        return skipped(
            subject, "not used: HTTP mode, Slack sends requests to https://YOUR-HOST/slack/events "
            "(`callbot manifest --http https://YOUR-HOST` prints the manifest for it)",
        )
    client = AsyncWebClient(base_url=c.settings.slack_api_url, session=c.slack().session,
                            timeout=SLACK_TIMEOUT_SECONDS)
    try:
        # Only asks for a websocket URL: nothing connects, no events are taken from the bot.
        await client.apps_connections_open(app_token=c.settings.slack_app_token.get_secret_value())
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown error")
        return failed(
            subject, f"Slack refused SLACK_APP_TOKEN ({error})",
            _SETTING_FIXES["SLACK_APP_TOKEN"] + "; Socket Mode must be on (Socket Mode page, or "
            "socket_mode_enabled: true in the manifest)",
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return failed(subject, f"cannot reach {c.settings.slack_api_url} ({type(exc).__name__})",
                      "check SLACK_API_URL and outgoing HTTPS from this host")
    return passed(subject, "valid (Slack hands out Socket Mode connections for it)")


# --------------------------------------------------------------------------------- Evo Voice


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
        return failed(subject, f"Evo Voice refused the login {user!r}",
                      f"check EVOVOICE_USERNAME and EVOVOICE_PASSWORD by logging in at {url}")
    except EvoVoiceUnreachable:
        return failed(subject, f"cannot connect to {url}",
                      "check EVOVOICE_URL (https://team.evovoice.io or https://evovoice.io) and "
                      "that this host may make outgoing HTTPS connections")
    except EvoVoiceError as exc:
        return failed(subject, f"GET /auth/status failed: {exc.message}",
                      f"check EVOVOICE_URL ({url}) points at the Evo Voice API; try again later")
    if not status.is_authenticated:
        return failed(subject, f"{user!r} is not authenticated",
                      "check EVOVOICE_USERNAME and EVOVOICE_PASSWORD")
    c.auth_status = status
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
    return passed(subject, f"{c.settings.evovoice_username!r} holds {', '.join(held)}")


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
    subject = "Flow aliases"
    if c.account_id is None or c.policy is None:
        return skipped(subject, "not checked (needs the Evo Voice account and the policy file)")
    c.catalog = Catalog(c.evo(), [c.account_id], c.policy.flows)
    try:
        c.flows = await c.catalog.flows()
    except EvoVoiceError as exc:
        c.item_failures += 1
        return failed(subject, f"reading the account's flows failed: {exc.message}",
                      "try again; if it persists, check the Evo Voice user's access to the account")
    if not c.policy.flows:
        return skipped(subject, "none in [flows] (flows are chosen by name)")
    by_id = {flow.id: flow for flow in c.flows}
    findings = []
    for alias, flow_id in c.policy.flows.items():
        flow = by_id.get(flow_id)
        if flow is not None:
            findings.append(Finding(Status.PASS, f"Flow alias {alias}",
                                    f"→ “{flow.name}” ({flow_id})"))
            continue
        c.item_failures += 1
        listing = ", ".join(f"{f.name} ({f.id})" for f in c.flows[:LIST_AT_MOST]) or "none"
        findings.append(Finding(
            Status.FAIL, f"Flow alias {alias}",
            f"flow ID {flow_id!r} does not exist in account {c.account_id}",
            f"in [flows] of {c.policy_path}, set {alias} to one of the account's flows or remove "
            f"it; the account's flows: {listing}",
        ))
    return findings


async def check_default_caller_id(c: Checkup) -> list[Finding]:
    subject = "Default caller ID"
    if c.policy is None:
        return skipped(subject, "not checked (fix the policy file first)")
    if c.policy.default_caller_id is None:
        return skipped(subject, "not set (Evo Voice picks one of the account's numbers)")
    if c.catalog is None:
        return skipped(subject, "not checked (needs the Evo Voice account)")
    masked = mask(c.policy.default_caller_id)
    try:
        owned = await c.catalog.owned_numbers()
    except EvoVoiceError as exc:
        c.item_failures += 1
        return failed(subject, f"reading the account's phone numbers failed: {exc.message}",
                      "try again; if it persists, check the Evo Voice user's access to the account")
    if c.policy.default_caller_id not in owned:
        c.item_failures += 1
        listing = ", ".join(owned[:LIST_AT_MOST]) or "the account owns none"
        return failed(
            subject, f"{masked} is not one of account {c.account_id}'s phone numbers",
            f"set default_caller_id in {c.policy_path} to one of: {listing}; or remove it",
        )
    return passed(subject, f"{masked} is valid and one of the account's numbers")


async def check_oncall(c: Checkup) -> list[Finding]:
    """The escalation flow, and where each person's phone number comes from."""
    subject = "On-call"
    if c.policy is None:
        return skipped(subject, "not checked (fix the policy file first)")
    oncall = c.policy.oncall
    if oncall is None:
        return skipped(subject, "no [oncall] section: nobody to escalate to (the Escalate to "
                                "on-call shortcuts say how to set one up)")
    findings: list[Finding] = []
    subject = "On-call flow"
    if c.catalog is None:
        findings += skipped(subject, "not checked (needs the Evo Voice account)")
    else:
        try:
            flow = await c.catalog.resolve_flow(oncall.flow)
        except CallbotError as exc:
            c.item_failures += 1
            findings += failed(subject, f"{oncall.flow!r}: {exc.user_message}",
                               f"set oncall.flow in {c.policy_path} to one of the account's flows "
                               "(its name, slug, [flows] alias or ID)")
        except EvoVoiceError as exc:
            c.item_failures += 1
            findings += failed(subject, f"reading the account's flows failed: {exc.message}",
                               "try again; if it persists, check the Evo Voice user's access")
        else:
            findings += passed(subject, f"{oncall.flow!r} → “{flow.name}” ({flow.id}); each "
                                        f"person has {oncall.answer_timeout} s to answer")
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


async def check_start_up_agrees(c: Checkup) -> list[Finding]:
    """What `callbot run` checks at start-up, in case it checks more than the lines above."""
    subject = "Start-up check"
    if c.catalog is None or c.policy is None or c.item_failures:
        return []  # the lines above already say what is wrong
    try:
        await check_policy_against_account(c.catalog, c.policy)
    except ConfigError as exc:
        return [Finding(Status.FAIL, subject, problem, f"fix it in {c.policy_path}")
                for problem in exc.problems]
    except EvoVoiceError as exc:
        return failed(subject, f"Evo Voice failed: {exc.message}", "try again")
    return passed(subject, "the policy agrees with the Evo Voice account")


# ---------------------------------------------------------------------------------- database


async def check_database(c: Checkup) -> list[Finding]:
    subject = "Database"
    if c.settings is None:
        return skipped(subject, "not checked (fix the settings first)")
    url = c.settings.database_url
    latest = max((m.version for m in MIGRATIONS), default=0)
    if dialect_of(url) == POSTGRESQL:
        return await _check_postgres(url, latest)
    raw = sqlite_path(url)
    if raw == ":memory:":
        return passed(subject, "in memory: nothing is kept across restarts (set DATABASE_URL to "
                               "a file to keep call history and limits)")
    path = Path(raw)
    if not path.exists():
        parent = _existing_ancestor(path.parent)
        if os.access(parent, os.W_OK | os.X_OK):
            return passed(subject, f"{path} does not exist yet; the bot creates and migrates it "
                                   "at start-up")
        return failed(subject, f"{path} does not exist and {parent} is not writable",
                      "give the bot's user write access there, or point DATABASE_URL elsewhere "
                      "(in the container image: a volume at /data)")
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        return failed(subject, f"{path} or its directory is not writable for this user",
                      "give the bot's user read and write access to the file and its directory")
    db = Database(url)
    try:
        await db.open_read_only()
        await db.fetchone("SELECT 1")
        version = await db.schema_version()
    except Exception as exc:  # sqlite3 errors say what is wrong with the file, nothing secret
        return failed(subject, f"{path} can't be read as a database ({exc})",
                      "point DATABASE_URL at callbot's database, or move this file away so the bot "
                      "creates a new one")
    finally:
        await db.close()
    return _schema_finding(str(path), version, latest, "back the file up first")


async def _check_postgres(url: str, latest: int) -> list[Finding]:
    subject = "Database"
    where = _without_password(url)
    db = Database(url)
    try:
        await db.open_read_only()
        version = await db.schema_version()
    except Exception as exc:  # the driver's words say what failed (refused, auth, no database)
        return failed(subject, f"{where} can't be reached ({type(exc).__name__}: "
                               f"{_without_password(str(exc))})",
                      "check DATABASE_URL (host, port, user, password, database name) and that "
                      "PostgreSQL accepts connections from here")
    finally:
        await db.close()
    return _schema_finding(where, version, latest, "take a backup first (pg_dump)")


def _schema_finding(where: str, version: int, latest: int, backup: str) -> list[Finding]:
    subject = "Database"
    if version < latest:
        return failed(subject, f"{where} is at schema version {version}; this callbot needs "
                               f"{latest} (not migrated)",
                      f"start the bot (`callbot`): it applies the missing migrations at start-up; "
                      f"{backup}")
    if version > latest:
        return failed(subject, f"{where} is at schema version {version}, newer than this callbot "
                               f"knows ({latest})",
                      "run the callbot version that migrated it (or a newer one)")
    return passed(subject, f"{where} is reachable and migrated (schema version {version})")


def _without_password(text: str) -> str:
    """`postgresql://bot:secret@db/callbot` → `postgresql://bot:•••@db/callbot`."""
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]*@", r"\1•••@", text)


def _existing_ancestor(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


CHECKS: list[Check] = [
    check_settings,
    check_policy,
    check_slack_token,
    check_slack_scopes,
    check_slack_ids,
    check_socket_mode_token,
    check_evovoice_login,
    check_evovoice_role,
    check_evovoice_account,
    check_flow_aliases,
    check_default_caller_id,
    check_oncall,
    check_start_up_agrees,
    check_database,
]


async def run_checkup(checks: Sequence[Check] = CHECKS, **overrides: Any) -> list[Finding]:
    """Every check's findings, in order. `overrides` go to Settings (tests: `_env_file=None`)."""
    checkup = Checkup(overrides=overrides)
    findings: list[Finding] = []
    try:
        for check in checks:
            try:
                findings += await check(checkup)
            except Exception as exc:  # a broken check must not hide the others
                findings += failed(check.__name__.removeprefix("check_"),
                                   f"the check itself failed ({type(exc).__name__})",
                                   "report this to the callbot maintainers")
    finally:
        await checkup.close()
    return findings


def report(findings: Sequence[Finding]) -> tuple[str, int]:
    """The text to print and the exit code."""
    problems = sum(1 for finding in findings if finding.status is Status.FAIL)
    lines = [finding.render() for finding in (_fold_waiting(findings) if problems else findings)]
    if problems:
        lines.append(f"\n{problems} problem{'s' if problems != 1 else ''} found: fix the lines "
                     "marked ✗ (README.md, \"Troubleshooting\", explains each) and run "
                     "`callbot check` again.")
        return "\n".join(lines), EXIT_PROBLEMS
    lines.append("\nAll checks passed.")
    return "\n".join(lines), EXIT_OK


def _fold_waiting(findings: Sequence[Finding]) -> list[Finding]:
    """The checks waiting on an earlier ✗ as one line, so the ✗ lines stand out."""
    waiting = [f for f in findings if f.status is Status.SKIP and f.detail.startswith(WAITING)]
    if len(waiting) < 2:
        return list(findings)
    folded = Finding(Status.SKIP, "Not checked yet",
                     "waiting on the lines marked ✗: " + ", ".join(f.subject for f in waiting))
    rest = [f for f in findings if not any(f is w for w in waiting)]
    return rest + [folded]


async def main(**overrides: Any) -> int:
    text, code = report(await run_checkup(**overrides))
    print(text, file=sys.stdout)
    return code
