"""`callbot init`: a wizard that asks, checks each answer live, writes `.env` and `callbot.toml`.

Each secret is tried as soon as it is typed (Slack's `auth.test` and `apps.connections.open`,
Evo Voice's `GET /auth/status`); the account's flows and owned numbers are offered to pick from;
people are named by email or @handle and turned into member IDs (`users.lookupByEmail`,
`users.list`). Nothing is written until every answer is in, and an existing file is replaced only
when the person says so. The files carry comments saying what each line is; `callbot check`
passes on them. `SLACK_API_URL` from the environment is honoured (proxies; the tests' stand-in).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
import phonenumbers
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import DEFAULT_EVOVOICE_URL, DEFAULT_SLACK_API_URL, KNOWN_ROLES, MANAGER
from bot.evovoice.client import BadLogin, EvoVoiceClient, EvoVoiceError, Flow
from bot.phone import DialPolicy, NumberRejected, check_dialable

T = TypeVar("T")
EXIT_OK = 0
EXIT_STOPPED = 1


class Stop(Exception):
    """The person ended the wizard (end of input, or Ctrl-C)."""


@dataclass
class Answers:
    slack_api_url: str = DEFAULT_SLACK_API_URL
    bot_token: str = ""
    app_token: str = ""
    signing_secret: str = ""
    workspace: str = ""
    evovoice_url: str = DEFAULT_EVOVOICE_URL
    evovoice_username: str = ""
    evovoice_password: str = ""
    account_id: str = ""
    several_accounts: bool = False
    default_region: str = "US"
    default_caller_id: str = ""
    managers: list[tuple[str, str]] = field(default_factory=list)  # (member ID, who)
    oncall_flow: str = ""
    rotation: list[tuple[str, str]] = field(default_factory=list)
    people: dict[str, str] = field(default_factory=dict)  # member ID -> E.164


class Terminal:
    """Questions and answers on the terminal; secrets are read without echo."""

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def ask(self, question: str, default: str = "") -> str:
        shown = f"{question} [{default}]: " if default else f"{question}: "
        try:
            answer = input(shown).strip()
        except (EOFError, KeyboardInterrupt):
            raise Stop() from None
        return answer or default

    def secret(self, question: str) -> str:
        try:
            return getpass.getpass(f"{question} (not shown): ").strip()
        except (EOFError, KeyboardInterrupt):
            raise Stop() from None

    def yes(self, question: str, default: bool = True) -> bool:
        answer = self.ask(f"{question} ({'Y/n' if default else 'y/N'})").lower()
        return default if not answer else answer.startswith("y")

    def pick(self, question: str, choices: Sequence[str], *, allow_none: str | None = None) -> int:
        """The index chosen from a numbered list, or -1 for `allow_none`."""
        for i, choice in enumerate(choices, 1):
            self.say(f"  {i}. {choice}")
        if allow_none:
            self.say(f"  0. {allow_none}")
        while True:
            answer = self.ask(question, "1" if choices else "0")
            if answer.isdigit() and (0 if allow_none else 1) <= int(answer) <= len(choices):
                return int(answer) - 1
            self.say(f"  Type a number from the list{' (0 for none)' if allow_none else ''}.")


class Wizard:
    def __init__(self, terminal: Terminal, folder: Path, environ: dict[str, str]) -> None:
        self.t = terminal
        self.folder = folder
        self.answers = Answers(slack_api_url=environ.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL)
        self._flows: list[Flow] = []

    def run(self) -> int:
        self.t.say("callbot init: a few questions, each answer checked at once; then .env and "
                   "callbot.toml are written.\n")
        if not self._may_write():
            return EXIT_STOPPED
        self.slack()
        self.evovoice()
        self.policy()
        self.write()
        return EXIT_OK

    # ---------------------------------------------------------------------------------- Slack

    def slack(self) -> None:
        a = self.answers
        self.t.say("Slack (https://api.slack.com/apps → your app; create it from manifest.yml).")
        a.bot_token = self._token(
            "Bot User OAuth Token, xoxb-… (OAuth & Permissions)", "xoxb-", "a bot token",
            self._auth_test,
        )
        self.t.say("Socket Mode needs no public address (recommended); HTTP mode needs the "
                   "signing secret and a public https URL.")
        a.app_token = self._token(
            "App-level token, xapp-… (Basic Information → App-Level Tokens; empty for HTTP mode)",
            "xapp-", "an app-level token", self._socket_mode, on_empty=self._signing_secret,
        )

    def _token(
        self,
        prompt: str,
        prefix: str,
        what: str,
        check: Callable[[str], Coroutine[Any, Any, tuple[bool, str]]],
        on_empty: Callable[[], bool] | None = None,
    ) -> str:
        """Ask until a token with `prefix` passes `check` live; an empty answer goes to
        `on_empty` where there is one ("", no token, once it is satisfied)."""
        while True:
            token = self.t.secret(prompt)
            if not token and on_empty is not None:
                if on_empty():
                    return ""
                continue
            if not token.startswith(prefix):
                self.t.say(f"  ✗ {what} starts with {prefix}.")
                continue
            ok, said = _run(check(token))
            self.t.say(f"  {'✓' if ok else '✗'} {said}")
            if ok:
                return token

    def _signing_secret(self) -> bool:
        self.answers.signing_secret = self.t.secret("Signing Secret (Basic Information)")
        if self.answers.signing_secret:
            return True
        self.t.say("  ✗ HTTP mode needs the signing secret.")
        return False

    def _slack_client(self, token: str | None = None) -> AsyncWebClient:
        return AsyncWebClient(token=token or self.answers.bot_token,
                              base_url=self.answers.slack_api_url, timeout=10)

    async def _auth_test(self, token: str) -> tuple[bool, str]:
        try:
            identity = await self._slack_client(token).auth_test()
        except SlackApiError as exc:
            return False, f"Slack refused it ({exc.response.get('error')}); copy it again."
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, f"cannot reach {self.answers.slack_api_url} ({type(exc).__name__})."
        self.answers.workspace = str(identity.get("team"))
        return True, f"connected to {identity.get('team')} as @{identity.get('user')}"

    async def _socket_mode(self, app_token: str) -> tuple[bool, str]:
        try:
            await self._slack_client().apps_connections_open(app_token=app_token)
        except SlackApiError as exc:
            return False, (f"Slack refused it ({exc.response.get('error')}); it needs the "
                           "connections:write scope, and Socket Mode must be on.")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, f"cannot reach Slack ({type(exc).__name__})."
        return True, "Socket Mode works with it"

    # ------------------------------------------------------------------------------ Evo Voice

    def evovoice(self) -> None:
        a = self.answers
        self.t.say("\nEvo Voice: the bot's own login, with the Manager role.")
        a.evovoice_url = self.t.ask("Evo Voice address", a.evovoice_url).rstrip("/")
        while True:
            a.evovoice_username = self.t.ask("Evo Voice username (email)")
            a.evovoice_password = self.t.secret("Evo Voice password")
            ok, said, accounts = _run(self._login())
            self.t.say(f"  {'✓' if ok else '✗'} {said}")
            if ok:
                break
        if len(accounts) > 1:
            a.several_accounts = True
            index = self.t.pick("Which account should callbot use?",
                                [f"{name} ({aid})" for aid, name in accounts])
            a.account_id = accounts[index][0]
        else:
            a.account_id = accounts[0][0]
        self._flows, numbers = _run(self._catalog())
        if numbers:
            self.t.say("Caller ID: the number people see when callbot calls.")
            index = self.t.pick("Default caller ID", numbers,
                                allow_none="let Evo Voice choose each time")
            a.default_caller_id = numbers[index] if index >= 0 else ""

    def _evo(self) -> EvoVoiceClient:
        a = self.answers
        return EvoVoiceClient(a.evovoice_url, a.evovoice_username, a.evovoice_password,
                              timeout=httpx.Timeout(15.0, connect=5.0))

    async def _login(self) -> tuple[bool, str, list[tuple[str, str]]]:
        evo = self._evo()
        try:
            status = await evo.auth_status()
        except BadLogin:
            return False, "Evo Voice refused the login; try again.", []
        except EvoVoiceError as exc:
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
        return True, (f"logged in as {status.display_name or self.answers.evovoice_username} "
                      f"({', '.join(held)})"), accounts

    async def _catalog(self) -> tuple[list[Flow], list[str]]:
        evo = self._evo()
        try:
            flows = await evo.list_flows([self.answers.account_id])
            owned = await evo.list_phone_numbers([self.answers.account_id])
        finally:
            await evo.aclose()
        return flows, [n.phone_number for n in owned if n.phone_number]

    # ---------------------------------------------------------------------------------- policy

    def policy(self) -> None:
        a = self.answers
        while True:
            region = self.t.ask("\nHome region: two letters, for numbers typed without a country "
                                "code", a.default_region).upper()
            if region in phonenumbers.SUPPORTED_REGIONS:
                a.default_region = region
                break
            self.t.say(f"  ✗ {region!r} is not a region code (like US, CA, GB).")
        self.t.say("Who may place calls (the Manager role): emails or @handles, separated by "
                   "commas.")
        a.managers = self._people("People who may call")
        if self._flows and self.t.yes("Set up an on-call rotation now?"):
            index = self.t.pick("Flow for on-call calls", [f.name for f in self._flows])
            a.oncall_flow = self._flows[index].name
            a.rotation = self._people("The rotation, in order")
            policy = DialPolicy(default_region=a.default_region,
                                allowed_regions=frozenset({a.default_region}))
            for member, who in a.rotation:
                while True:
                    number = self.t.ask(f"Phone number of {who} (empty: their Slack profile's)")
                    if not number:
                        break
                    try:
                        a.people[member] = check_dialable(number, policy).e164
                        break
                    except NumberRejected as exc:
                        self.t.say(f"  ✗ {exc.reason}")

    def _people(self, question: str) -> list[tuple[str, str]]:
        while True:
            names = [n.strip() for n in self.t.ask(question).split(",") if n.strip()]
            if not names:
                self.t.say("  ✗ name at least one person.")
                continue
            found, problems = _run(self._members(names))
            for member, who in found:
                self.t.say(f"  ✓ {who} → {member}")
            for problem in problems:
                self.t.say(f"  ✗ {problem}")
            if not problems:
                return found

    async def _members(self, names: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
        client = self._slack_client()
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
                    problems.append(f"nobody in {self.answers.workspace} is called @{handle}")
            except SlackApiError as exc:
                error = exc.response.get("error")
                if error == "users_not_found":
                    problems.append(f"nobody in {self.answers.workspace} has the email {name}")
                elif error == "missing_scope":
                    problems.append(f"looking up {name} by email needs the users:read.email "
                                    "scope (OAuth & Permissions); type their @handle instead")
                else:
                    problems.append(f"looking up {name} failed ({error}); the bot needs the "
                                    "users:read scope")
        return found, problems

    # ---------------------------------------------------------------------------------- files

    def _may_write(self) -> bool:
        existing = [p for p in (self.folder / ".env", self.folder / "callbot.toml") if p.exists()]
        if not existing:
            return True
        names = " and ".join(p.name for p in existing)
        return self.t.yes(f"{names} exist already; replace them at the end?", default=False)

    def write(self) -> None:
        env, toml = self.folder / ".env", self.folder / "callbot.toml"
        env.write_text(render_env(self.answers), encoding="utf-8")
        env.chmod(0o600)  # it holds the secrets
        toml.write_text(render_policy(self.answers), encoding="utf-8")
        self.t.say(f"\nWrote {env} (secrets; readable by you only) and {toml}.")
        self.t.say("Next: `callbot check` tries it all, then `callbot` starts the bot.")


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


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # One event loop per check: the questions between them are blocking reads of the terminal.
    return asyncio.run(coroutine)


def _list(ids: Sequence[str]) -> str:
    return ", ".join(f'"{i}"' for i in ids)


def render_env(a: Answers) -> str:
    lines = [
        "# callbot settings, written by `callbot init`. Real environment variables take "
        "precedence;",
        "# .env.example lists every setting. Keep this file secret.",
        f"SLACK_BOT_TOKEN={a.bot_token}",
        "# Set: Socket Mode (no public URL needed). Empty: HTTP mode, with SLACK_SIGNING_SECRET.",
        f"SLACK_APP_TOKEN={a.app_token}",
        f"SLACK_SIGNING_SECRET={a.signing_secret}",
    ]
    if a.slack_api_url != DEFAULT_SLACK_API_URL:
        lines.append(f"SLACK_API_URL={a.slack_api_url}")
    lines += [
        f"EVOVOICE_URL={a.evovoice_url}",
        "# The bot's own Evo Voice login; it holds the Manager role.",
        f"EVOVOICE_USERNAME={a.evovoice_username}",
        f"EVOVOICE_PASSWORD={a.evovoice_password}",
        "# The account callbot uses (needed when the login reaches several).",
        f"EVOVOICE_ACCOUNT_ID={a.account_id if a.several_accounts else ''}",
        "CALLBOT_CONFIG=./callbot.toml",
        "DATABASE_URL=sqlite:///./callbot.db",
        "PORT=3000",
        "LOG_LEVEL=INFO",
    ]
    return "\n".join(lines) + "\n"


def render_policy(a: Answers) -> str:
    lines = [
        "# callbot policy file, written by `callbot init` (callbot.example.toml and README.md",
        "# explain every key). Checked at start-up; `callbot check` tries it against Slack and",
        "# Evo Voice.",
        "",
        f'default_region = "{a.default_region}"              # for numbers typed without a '
        "country code",
        f'allowed_regions = ["{a.default_region}"]           # where calls may go',
    ]
    if a.default_caller_id:
        lines.append(f'default_caller_id = "{a.default_caller_id}"  # one of the account\'s '
                     "numbers")
    lines += ["", "# Who may place calls, by Slack member ID:"]
    lines += [f"#   {member}: {who}" for member, who in a.managers]
    lines += ["[roles]", f"{MANAGER} = [{_list([m for m, _ in a.managers])}]", ""]
    if a.oncall_flow:
        lines += ["[people]                             # phone numbers; others: their Slack "
                  "profile's"]
        lines += [f'{member} = "{number}"' for member, number in a.people.items()]
        lines += ["", "[oncall]", f'flow = "{a.oncall_flow}"',
                  "# The rotation, in order:"]
        lines += [f"#   {member}: {who}" for member, who in a.rotation]
        lines += [f"rotation = [{_list([m for m, _ in a.rotation])}]",
                  'handoff = "monday 09:00"             # when the duty passes on',
                  'timezone = "UTC"                     # the team\'s IANA time zone', ""]
    return "\n".join(lines)


def main(folder: Path | None = None, terminal: Terminal | None = None) -> int:
    wizard = Wizard(terminal or Terminal(), folder or Path.cwd(), dict(os.environ))
    try:
        return wizard.run()
    except Stop:
        print("\ncallbot init: stopped; nothing was written.", file=sys.stderr)
        return EXIT_STOPPED

