"""`callbot init`'s live checks: each answer tried at once against Slack (`auth.test`,
`apps.connections.open`, `users.lookupByEmail`, `users.list`) and Evo Voice (`GET /auth/status`,
the account's flows and numbers)."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.certificates import FIX as CERTIFICATE_FIX
from bot.certificates import untrusted
from bot.config import KNOWN_ROLES
from bot.evovoice.client import BadLogin, EvoVoiceClient, EvoVoiceError, Flow
from bot.ops.init_files import Answers


def slack_client(a: Answers, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or a.bot_token, base_url=a.slack_api_url, timeout=10)


async def auth_test(a: Answers, token: str) -> tuple[bool, str]:
    """The bot token works; notes the workspace's name in `a`."""
    try:
        identity = await slack_client(a, token).auth_test()
    except SlackApiError as exc:
        return False, f"Slack refused it ({exc.response.get('error')}); copy it again."
    except (aiohttp.ClientError, TimeoutError) as exc:
        if (refused := untrusted(a.slack_api_url, exc)) is not None:
            return False, f"{refused}; {CERTIFICATE_FIX}."
        return False, f"cannot reach {a.slack_api_url} ({type(exc).__name__})."
    a.workspace = str(identity.get("team"))
    return True, f"connected to {identity.get('team')} as @{identity.get('user')}"


async def socket_mode(a: Answers, app_token: str) -> tuple[bool, str]:
    """The app-level token opens a Socket Mode connection."""
    try:
        await slack_client(a).apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        return False, (f"Slack refused it ({exc.response.get('error')}); it needs the "
                       "connections:write scope, and Socket Mode must be on.")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, f"cannot reach Slack ({type(exc).__name__})."
    return True, "Socket Mode works with it"


def evo_client(a: Answers) -> EvoVoiceClient:
    return EvoVoiceClient(a.evovoice_url, a.evovoice_username, a.evovoice_password,
                          timeout=httpx.Timeout(15.0, connect=5.0))


async def login(a: Answers) -> tuple[bool, str, list[tuple[str, str]]]:
    """The Evo Voice login works and may call; the accounts it reaches (ID, name)."""
    evo = evo_client(a)
    try:
        status = await evo.auth_status()
    except BadLogin:
        return False, "Evo Voice refused the login; try again.", []
    except EvoVoiceError as exc:
        if (refused := untrusted(a.evovoice_url, exc)) is not None:
            return False, f"{refused}; {CERTIFICATE_FIX}.", []
        return False, f"{exc.message}; check the address.", []
    finally:
        await evo.aclose()
    held = [role for role in KNOWN_ROLES if role in status.roles]
    if not held:
        roles = ", ".join(status.roles) or "none"
        return False, (f"this login holds neither Manager nor SystemAdministrator (its roles: "
                       f"{roles}); grant it Manager in Evo Voice, or use another login."), []
    names = list(status.account_names)
    accounts = [(aid, names[i] if i < len(names) and names[i] else aid)
                for i, aid in enumerate(status.account_ids)]
    if not accounts:
        return False, "this login reaches no account; give it access in Evo Voice.", []
    return True, (f"logged in as {status.display_name or a.evovoice_username} "
                  f"({', '.join(held)})"), accounts


async def catalog(a: Answers) -> tuple[list[Flow], list[str]]:
    """The account's flows and owned numbers, to pick from."""
    evo = evo_client(a)
    try:
        flows = await evo.list_flows([a.account_id])
        owned = await evo.list_phone_numbers([a.account_id])
    finally:
        await evo.aclose()
    return flows, [n.phone_number for n in owned if n.phone_number]


async def members(a: Answers, names: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Emails and @handles → (member ID, who), and a problem for each one not found."""
    client = slack_client(a)
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    directory: list[dict[str, Any]] | None = None
    for name in names:
        try:
            if "@" in name and not name.startswith("@"):
                user = (await client.users_lookupByEmail(email=name)).get("user") or {}
                found.append((str(user["id"]), f"{name} ({_label(user)})"))
                continue
            if directory is None:
                directory = await _everyone(client)
            handle = name.removeprefix("@").lower()
            matches = [u for u in directory if handle in _handles(u)]
            if len(matches) == 1:
                found.append((str(matches[0]["id"]), f"@{handle} ({_label(matches[0])})"))
            elif matches:
                ids = ", ".join(f"{_label(u)} {u['id']}" for u in matches)
                problems.append(f"@{handle} matches several people ({ids}); use an email")
            else:
                problems.append(f"nobody in {a.workspace} is called @{handle}")
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error == "users_not_found":
                problems.append(f"nobody in {a.workspace} has the email {name}")
            elif error == "missing_scope":
                problems.append(f"looking up {name} by email needs the users:read.email "
                                "scope (OAuth & Permissions); type their @handle instead")
            else:
                problems.append(f"looking up {name} failed ({error}); the bot needs the "
                                "users:read scope")
    return found, problems


async def _everyone(client: AsyncWebClient) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await client.users_list(limit=200, cursor=cursor or None)
        members += [m for m in page.get("members") or [] if not m.get("deleted")
                    and not m.get("is_bot")]
        cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            return members


def _handles(user: dict[str, Any]) -> set[str]:
    profile = user.get("profile") or {}
    return {str(v).lower() for v in (user.get("name"), profile.get("display_name"),
                                     profile.get("real_name"), user.get("real_name")) if v}


def _label(user: dict[str, Any]) -> str:
    return str(user.get("real_name") or (user.get("profile") or {}).get("real_name")
               or user.get("name") or user.get("id"))
