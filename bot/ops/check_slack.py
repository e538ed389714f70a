"""`callbot check`: the Slack tokens, their scopes, and the people and groups the policy names."""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.app import SLACK_TIMEOUT_SECONDS
from bot.config import RESPONDERS_EVERYONE, is_example_id, policy_slack_ids
from bot.ops.checkup import SETTING_FIXES, Checkup, count
from bot.ops.findings import Finding, Status, failed, passed, skipped, unreachable

SCOPES_HEADER = "x-oauth-scopes"
# Scope → what needs it; usergroups:read only when [roles] lists user groups.
REQUIRED_SCOPES = {
    "commands": "the /call command",
    "chat:write": "posting confirmations",
    "users:read": "reading people's profiles",
}
GROUP_SCOPE = "usergroups:read"
# Scope → what works less well without it: the bot goes on, the way README describes ("When Slack
# misbehaves"), so a token without them passes, with a word on each.
OPTIONAL_SCOPES = {
    "chat:write.public": "posting in public channels the bot has not joined (else the status goes "
                         "through the command's response_url, then by direct message)",
    "channels:history": "finding a status message lost in a crash, in public channels (else it "
                        "is posted again)",
    "groups:history": "the same in private channels",
    "im:history": "the same in direct messages",
    "reactions:write": "the outcome's reaction on a call's parent message",
}


async def check_slack_token(c: Checkup) -> list[Finding]:
    subject = "Slack bot token"
    if c.settings is None:
        return skipped(subject, "not checked (fix the settings first)")
    try:
        c.identity = await c.slack().auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown error")
        return failed(subject, f"Slack refused it ({error})", SETTING_FIXES["SLACK_BOT_TOKEN"]
                      + "; a reinstalled app or a revoked token needs the new token")
    except (aiohttp.ClientError, TimeoutError) as exc:
        url = c.settings.slack_api_url
        return unreachable(
            subject, url, exc, f"cannot reach {url} ({type(exc).__name__})",
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
    why = [f"roles given to user groups: {', '.join(groups)}"] if groups else []
    responders = c.policy.oncall.responders if c.policy.oncall else RESPONDERS_EVERYONE
    teams = [] if responders == RESPONDERS_EVERYONE else [m for m in responders if m[0] == "S"]
    if teams:
        why.append(f"oncall.responders' user groups: {', '.join(teams)}")
    if why:
        needed[GROUP_SCOPE] = "; ".join(why)
    missing = [scope for scope in needed if scope not in granted]
    if missing:
        return failed(
            subject, "the bot token lacks " + ", ".join(f"{scope} ({needed[scope]})"
                                                          for scope in missing),
            "add them under OAuth & Permissions → Bot Token Scopes (manifest.yml lists every "
            "scope callbot uses), then reinstall the app to the workspace",
        )
    detail = "granted: " + ", ".join(sorted(needed))
    without = [scope for scope in OPTIONAL_SCOPES if scope not in granted]
    if without:
        detail += "; not granted, so working less well: " + "; ".join(
            f"{scope} ({OPTIONAL_SCOPES[scope]})" for scope in without
        )
    return passed(subject, detail)


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
        findings += passed(subject, f"{count(users, 'user', 'users')} and "
                                    f"{count(groups, 'user group', 'user groups')} found in "
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
            SETTING_FIXES["SLACK_APP_TOKEN"] + "; Socket Mode must be on (Socket Mode page, or "
            "socket_mode_enabled: true in the manifest)",
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        url = c.settings.slack_api_url
        return unreachable(subject, url, exc, f"cannot reach {url} ({type(exc).__name__})",
                           "check SLACK_API_URL and outgoing HTTPS from this host")
    return passed(subject, "valid (Slack hands out Socket Mode connections for it)")
