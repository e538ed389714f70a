"""`callbot init` driven as a person would, through a pseudo-terminal, against the stand-ins.

What it writes must pass `callbot check` as it stands.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from bot.config import ConfigError, load_settings
from bot.ops.check import report, run_checkup
from bot.ops.init import Terminal, Wizard
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from tests.conftest import APP_TOKEN, BOT_TOKEN, EVO_PASSWORD, EVO_USER
from tests.init_wizard import answer, clean_environment, spawn, spawn_init


async def connect_slack_and_evovoice(child: pexpect.spawn, evo: EvoVoiceStandIn) -> None:
    """The first questions, a mistyped token and password included."""
    await answer(child, "Bot User OAuth Token", "xoxb-mistyped")
    await child.expect("✗ Slack refused it", async_=True)
    await answer(child, "Bot User OAuth Token", BOT_TOKEN)
    await child.expect("✓ connected to Test Team as @callbot", async_=True)
    await answer(child, "App-level token", APP_TOKEN)
    await child.expect("✓ Socket Mode works", async_=True)
    await answer(child, "Evo Voice address", evo.url)
    await answer(child, "Evo Voice username", EVO_USER)
    await answer(child, "Evo Voice password", "wrong")
    await child.expect("✗ Evo Voice refused the login", async_=True)
    await answer(child, "Evo Voice username", EVO_USER)
    await answer(child, "Evo Voice password", EVO_PASSWORD)
    await child.expect(r"✓ logged in as .* \(Manager\)", async_=True)
    await child.expect(r"(\d+)\. \+18145550101", async_=True)
    await answer(child, "Default caller ID", child.match.group(1))


@pytest.fixture
def workspace(slack: SlackStandIn) -> SlackStandIn:
    slack.only_added_users_exist = True
    assert slack.bot_scopes is not None
    slack.bot_scopes.append("users:read.email")  # for users.lookupByEmail
    slack.users.update({
        "U0ALICE1": {"name": "alice", "real_name": "Alice Example"},
        "U0BOB1": {"name": "bob", "real_name": "Bob Example"},
        "U0LEAD1": {"name": "lead", "real_name": "Lea Lead"},
    })
    return slack


@pytest.mark.usefixtures("no_ambient_settings")  # and in tmp_path, where init writes
async def test_init_writes_a_configuration_that_callbot_check_passes(
    workspace: SlackStandIn, evo: EvoVoiceStandIn, tmp_path: Path
) -> None:
    child = spawn_init(tmp_path, workspace)
    try:
        await connect_slack_and_evovoice(child, evo)
        await answer(child, "Home region", "")
        await answer(child, "People who may call", "lead@example.com, @ghost")
        await child.expect("✗ nobody in Test Team is called @ghost", async_=True)
        await answer(child, "People who may call", "lead@example.com")
        await child.expect("✓ lead@example.com \\(Lea Lead\\) → U0LEAD1", async_=True)

        await answer(child, "on-call rotation", "y")
        await child.expect(r"(\d+)\. Escalation", async_=True)
        await answer(child, "Flow for on-call calls", child.match.group(1))
        await answer(child, "The rotation, in order", "@alice, Bob Example")
        await answer(child, "Phone number of @alice", "+1 900 555 0123")
        await child.expect("✗", async_=True)  # premium rate: not dialled
        await answer(child, "Phone number of @alice", "(814) 404-3093")
        await answer(child, "Phone number of @bob example", "")
        await child.expect("Wrote", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before

    env_file = (tmp_path / ".env").read_text()
    assert f"SLACK_BOT_TOKEN={BOT_TOKEN}" in env_file and f"SLACK_APP_TOKEN={APP_TOKEN}" in env_file
    assert f"EVOVOICE_PASSWORD={EVO_PASSWORD}" in env_file
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0, ".env holds secrets"
    policy = tomllib.loads((tmp_path / "callbot.toml").read_text())
    assert policy["roles"] == {"Manager": ["U0LEAD1"]}
    assert policy["default_caller_id"] == "+18145550101"
    assert policy["oncall"]["flow"] == "Escalation"
    assert policy["oncall"]["rotation"] == ["U0ALICE1", "U0BOB1"]
    assert policy["people"] == {"U0ALICE1": "+18144043093"}
    assert "# Who may place calls" in (tmp_path / "callbot.toml").read_text()

    # `callbot check`'s checks, run here on the .env and callbot.toml found in this folder as the
    # command reads them (the command itself, its output and exit code: tests/test_doctor.py).
    out, code = report(await run_checkup())
    assert code == 0, out
    assert "All checks passed." in out


async def test_init_leaves_existing_files_alone_unless_told(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KEEP=1\n")
    child = spawn(tmp_path, clean_environment())
    try:
        await answer(child, "exist already; replace them", "")
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert (tmp_path / ".env").read_text() == "KEEP=1\n"
    assert not (tmp_path / "callbot.toml").exists()


async def test_init_stopped_midway_writes_nothing(tmp_path: Path) -> None:
    child = spawn(tmp_path, clean_environment())
    try:
        await child.expect("Bot User OAuth Token", async_=True)
        child.sendeof()
        await child.expect("nothing was written", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert list(tmp_path.iterdir()) == []


async def test_init_told_to_replace_but_stopped_at_the_last_questions_keeps_the_old_files(
    workspace: SlackStandIn, evo: EvoVoiceStandIn, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("KEEP=1\n")
    child = spawn_init(tmp_path, workspace)
    try:
        await answer(child, "exist already; replace them", "y")
        await connect_slack_and_evovoice(child, evo)  # every answer for .env is known now
        await child.expect("Home region", async_=True)
        child.sendeof()
        await child.expect("nothing was written", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert (tmp_path / ".env").read_text() == "KEEP=1\n"
    assert not (tmp_path / "callbot.toml").exists()


@pytest.mark.usefixtures("no_ambient_settings")  # and in tmp_path, where init writes
async def test_init_replacing_a_running_installations_env_keeps_what_it_does_not_ask_for(
    workspace: SlackStandIn, evo: EvoVoiceStandIn, tmp_path: Path
) -> None:
    """Run again on an installation (new tokens after the Slack app was reinstalled), init must not
    move the bot to an empty database of its own nor change the number hash key: years of audit
    trail, its limits and escalations would seem gone, and old numbers never found again."""
    postgres = "postgresql://callbot:pa%40ss@db.internal:5432/callbot"
    hash_key = "chosen before the first start, kept since"
    (tmp_path / ".env").write_text(
        "SLACK_BOT_TOKEN=xoxb-revoked\n"
        "EVOVOICE_PASSWORD_FILE=/run/secrets/evovoice  # init asks for the password instead\n"
        f"DATABASE_URL={postgres}\n"
        f"export AUDIT_HASH_KEY='{hash_key}'\n"
        "LOG_FORMAT=json\n")
    child = spawn_init(tmp_path, workspace)
    try:
        await answer(child, "exist already; replace them", "y")
        await connect_slack_and_evovoice(child, evo)
        await answer(child, "Home region", "")
        await answer(child, "People who may call", "lead@example.com")
        await answer(child, "on-call rotation", "n")
        await child.expect("Wrote", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before

    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0, ".env holds secrets"
    settings = load_settings()  # as the bot reads .env
    assert settings.database_url == postgres
    assert settings.audit_hash_key is not None
    assert settings.audit_hash_key.get_secret_value() == hash_key
    assert settings.log_format == "json"
    # What init asked for is the new answer, not the old setting.
    assert settings.slack_bot_token.get_secret_value() == BOT_TOKEN
    assert settings.evovoice_password.get_secret_value() == EVO_PASSWORD
    assert "EVOVOICE_PASSWORD_FILE" not in (tmp_path / ".env").read_text()


async def test_without_the_email_scope_it_says_so_and_handles_still_work(
    workspace: SlackStandIn, evo: EvoVoiceStandIn, tmp_path: Path
) -> None:
    assert workspace.bot_scopes is not None
    workspace.bot_scopes.remove("users:read.email")
    child = spawn_init(tmp_path, workspace)
    try:
        await connect_slack_and_evovoice(child, evo)
        await answer(child, "Home region", "CA")
        await answer(child, "People who may call", "lead@example.com")
        await child.expect("needs the users:read.email scope", async_=True)
        await answer(child, "People who may call", "@lead")
        await child.expect("✓ @lead \\(Lea Lead\\) → U0LEAD1", async_=True)
        await answer(child, "on-call rotation", "n")
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    policy = tomllib.loads((tmp_path / "callbot.toml").read_text())
    assert policy["roles"] == {"Manager": ["U0LEAD1"]} and policy["default_region"] == "CA"
    assert "oncall" not in policy


async def test_init_checks_token_prefixes_and_offers_http_mode(
    workspace: SlackStandIn, tmp_path: Path
) -> None:
    child = spawn_init(tmp_path, workspace)
    try:
        await answer(child, "Bot User OAuth Token", APP_TOKEN)
        await child.expect("✗ a bot token starts with xoxb-", async_=True)
        await answer(child, "Bot User OAuth Token", BOT_TOKEN)
        await child.expect("✓ connected to Test Team as @callbot", async_=True)
        await answer(child, "App-level token", BOT_TOKEN)
        await child.expect("✗ an app-level token starts with xapp-", async_=True)
        await answer(child, "App-level token", "")  # HTTP mode
        await answer(child, "Signing Secret", "")
        await child.expect("✗ HTTP mode needs the signing secret", async_=True)
        await answer(child, "App-level token", "")
        await answer(child, "Signing Secret", "0123456789abcdef")
        await child.expect("Evo Voice address", async_=True)
    finally:
        child.close()


# What the audit hook below looks at while a test watches (None: nothing). A hook can't be
# removed, so it is added once per process and does nothing unless a test set this.
_watching: list[Callable[[str], None] | None] = [None]


def _audit(event: str, _args: tuple[object, ...]) -> None:
    look, _watching[0] = _watching[0], None  # its own reads raise events too: not looked at
    if look is not None:
        try:
            look(event)
        finally:
            _watching[0] = look


sys.addaudithook(_audit)


@pytest.mark.parametrize("existed", [False, True], ids=["new", "replaced, readable by all"])
def test_env_is_never_readable_by_others_while_it_holds_the_secrets(
    tmp_path: Path, existed: bool
) -> None:
    """At every step Python audits while init writes `.env` (opening it, changing its mode,
    writing callbot.toml after it), a `.env` holding the new password is readable by its owner
    only: never written first and narrowed after."""
    env = tmp_path / ".env"
    if existed:
        env.write_text("EVOVOICE_PASSWORD=old\n")
        env.chmod(0o644)
    wizard = Wizard(Terminal(), tmp_path, {})
    wizard.answers.evovoice_password = "the-new-secret"
    exposed: list[str] = []

    def look(event: str) -> None:
        if env.exists() and env.stat().st_mode & 0o077 and "the-new-secret" in env.read_text():
            exposed.append(event)

    _watching[0] = look
    try:
        wizard.write()
    finally:
        _watching[0] = None
    assert exposed == [], f"readable by others while it held the password, at {exposed}"
    assert "EVOVOICE_PASSWORD=the-new-secret" in env.read_text()
    assert env.stat().st_mode & 0o777 == 0o600


@pytest.mark.usefixtures("no_ambient_settings")
@pytest.mark.parametrize("password", [
    '"X7#kd$9', "'starts-with-a-quote", "Tr0ub4dor&3 #1", " spaced ", "it's", "p$ss#1", "a\\'b",
])
def test_the_password_init_writes_is_the_password_the_bot_reads(
    tmp_path: Path, password: str
) -> None:
    # init logs in with the password as typed; the bot reads it back from .env. Written as typed,
    # a leading quote made it empty and " #" cut it short: the login init had just checked was
    # refused at start-up.
    wizard = Wizard(Terminal(), tmp_path, {})
    wizard.answers.bot_token, wizard.answers.app_token = BOT_TOKEN, APP_TOKEN
    wizard.answers.evovoice_username, wizard.answers.evovoice_password = EVO_USER, password
    wizard.write()
    settings = load_settings()
    assert settings.evovoice_password.get_secret_value() == password
    assert settings.evovoice_username == EVO_USER


@pytest.mark.usefixtures("no_ambient_settings")
def test_a_password_dotenv_would_expand_is_left_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # .env expands ${NAME} even in quotes, and nothing escapes it: written there, this password
    # was read as "p" + $HOME + "ss", a login refused though the file showed the right one.
    password = "p${HOME}ss"
    wizard = Wizard(Terminal(), tmp_path, {})
    wizard.answers.bot_token, wizard.answers.app_token = BOT_TOKEN, APP_TOKEN
    wizard.answers.evovoice_username, wizard.answers.evovoice_password = EVO_USER, password
    wizard.write()
    assert "set EVOVOICE_PASSWORD in the environment" in capsys.readouterr().out
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert refused.value.problems == ["EVOVOICE_PASSWORD: is required but not set"]
    monkeypatch.setenv("EVOVOICE_PASSWORD", password)
    assert load_settings().evovoice_password.get_secret_value() == password


@pytest.mark.usefixtures("no_ambient_settings")
@pytest.mark.parametrize("flow", ['On-call "P1"', "Ops \\ night"])
async def test_the_oncall_flow_init_writes_is_the_flow_the_bot_reads(
    workspace: SlackStandIn, evo: EvoVoiceStandIn, tmp_path: Path, flow: str
) -> None:
    # The flow's name is the account's, as Evo Voice lists it: written between quotes as it
    # stood, a quote or a backslash in it left callbot.toml no TOML at all.
    evo.flows.append({"id": "flow-odd", "name": flow, "accountId": "acct-1"})
    wizard = Wizard(Terminal(), tmp_path, {})
    a = wizard.answers
    a.slack_api_url, a.bot_token, a.app_token = workspace.api_url, BOT_TOKEN, APP_TOKEN
    a.evovoice_url, a.evovoice_username, a.evovoice_password = evo.url, EVO_USER, EVO_PASSWORD
    a.account_id, a.managers = "acct-1", [("U0LEAD1", "lead@example.com (Lea Lead)")]
    a.oncall_flow, a.rotation = flow, [("U0ALICE1", "@alice"), ("U0BOB1", "@bob")]
    wizard.write()
    assert tomllib.loads((tmp_path / "callbot.toml").read_text())["oncall"]["flow"] == flow
    out, code = report(await run_checkup())
    assert code == 0, out
    assert f"✓ On-call flow: {flow!r} → “{flow}” (flow-odd)" in out, out
