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
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import phonenumbers

from bot.config import DEFAULT_SLACK_API_URL
from bot.evovoice.client import Flow
from bot.ops.check_env_file import expands
from bot.ops.init_checks import auth_test, catalog, login, members, socket_mode
from bot.ops.init_files import Answers, kept_settings, render_env, render_policy
from bot.phone import DialPolicy, NumberRejected, check_dialable

T = TypeVar("T")
EXIT_OK = 0
EXIT_STOPPED = 1


class Stop(Exception):
    """The person ended the wizard (end of input, or Ctrl-C)."""


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
            self.t.say("Nothing written; your files are as they were. Move them aside, or answer "
                       "y, to write new ones.")
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
            partial(auth_test, self.answers),
        )
        self.t.say("Socket Mode needs no public address (recommended); HTTP mode needs the "
                   "signing secret and a public https URL.")
        a.app_token = self._token(
            "App-level token, xapp-… (Basic Information → App-Level Tokens; empty for HTTP mode)",
            "xapp-", "an app-level token", partial(socket_mode, self.answers),
            on_empty=self._signing_secret,
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

    # ------------------------------------------------------------------------------ Evo Voice

    def evovoice(self) -> None:
        a = self.answers
        self.t.say("\nEvo Voice: the bot's own login, with the Manager role.")
        a.evovoice_url = self.t.ask("Evo Voice address", a.evovoice_url).rstrip("/")
        while True:
            a.evovoice_username = self.t.ask("Evo Voice username (email)")
            a.evovoice_password = self.t.secret("Evo Voice password")
            ok, said, accounts = _run(login(a))
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
        self._flows, numbers = _run(catalog(a))
        if numbers:
            self.t.say("Caller ID: the number people see when callbot calls.")
            index = self.t.pick("Default caller ID", numbers,
                                allow_none="let Evo Voice choose each time")
            a.default_caller_id = numbers[index] if index >= 0 else ""

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
            found, problems = _run(members(self.answers, names))
            for member, who in found:
                self.t.say(f"  ✓ {who} → {member}")
            for problem in problems:
                self.t.say(f"  ✗ {problem}")
            if not problems:
                return found

    # ---------------------------------------------------------------------------------- files

    def _may_write(self) -> bool:
        existing = [p for p in (self.folder / ".env", self.folder / "callbot.toml") if p.exists()]
        if not existing:
            return True
        names = " and ".join(p.name for p in existing)
        return self.t.yes(f"{names} exist already; replace them at the end?", default=False)

    def write(self) -> None:
        env, toml = self.folder / ".env", self.folder / "callbot.toml"
        replaced = env.read_text(encoding="utf-8") if env.exists() else ""
        write_secret(env, render_env(self.answers, replaced))
        toml.write_text(render_policy(self.answers), encoding="utf-8")
        self.t.say(f"\nWrote {env} (secrets; readable by you only) and {toml}.")
        if kept := kept_settings(replaced):
            self.t.say(f"Kept from the .env it replaced: {', '.join(kept)}.")
        if expands(self.answers.evovoice_password):
            self.t.say("Your Evo Voice password holds ${…}, which .env would read as a variable, "
                       "so it is not in .env: set EVOVOICE_PASSWORD in the environment, or "
                       "EVOVOICE_PASSWORD_FILE to a file holding it.")
        self.t.say("Next: `callbot check` tries it all, then `callbot` starts the bot.")


def write_secret(path: Path, text: str) -> None:
    """`text` into `path`, readable by its owner only before any of it is written: a new file
    is created so, and one that was there is narrowed first (written, then narrowed, the secrets
    were readable by everyone on the host for that moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # One event loop per check: the questions between them are blocking reads of the terminal.
    return asyncio.run(coroutine)


def main(folder: Path | None = None, terminal: Terminal | None = None) -> int:
    wizard = Wizard(terminal or Terminal(), folder or Path.cwd(), dict(os.environ))
    try:
        return wizard.run()
    except Stop:
        print("\ncallbot init: stopped; nothing was written.", file=sys.stderr)
        return EXIT_STOPPED

