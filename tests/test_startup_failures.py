"""Start-up failures an operator can cause: each is one plain line and exit code 2, no traceback.

Each case runs the bot's entry point as `python -m bot` does, against the loopback stand-ins, and
reads what the operator would read on the terminal: in this process (tests/entry.py) where only the
entry point's logic is at stake, in a `python -m bot` of its own for a mount namespace and for one
configuration error.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot.config import ConfigError, load_policy, load_settings
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from bot.storage.database import MIGRATIONS, Database
from tests.conftest import POLICY, bot_environment
from tests.databases import POSTGRESQL, fresh_database, postgres_url, role_owning_nothing
from tests.entry import run_main
from tests.processes import BotProcess, run_bot_process

BASE = {
    "slack_bot_token": "xoxb-1",
    "slack_app_token": "xapp-1",
    "evovoice_username": "u",
    "evovoice_password": "p",
}


async def start_and_fail(env: dict[str, str], cwd: Path, *, argv_prefix: list[str] | None = None
                         ) -> str:
    """`python -m bot` in a process of its own: exit code 2, one plain line on stderr."""
    process = await run_bot_process(env, cwd, argv_prefix=argv_prefix)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    text = stderr.decode()
    assert process.returncode == 2, text
    assert "Traceback" not in text, text
    assert "callbot cannot start" in text, text
    return text


def fail_in_process(env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> str:
    """The same entry point in this process (an exception escaping it fails the test, as a
    traceback would): exit code 2, one plain line on stderr."""
    code, _, text = run_main([], env, cwd, monkeypatch, capsys)
    assert code == 2, text
    assert "Traceback" not in text, text
    assert "callbot cannot start" in text, text
    return text


def _directory(path: Path) -> None:
    path.mkdir()


def _not_a_database(path: Path) -> None:
    path.write_bytes(b"these are somebody's notes, not a database\n" * 200)


def _corrupt(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    data[4096:4096 * 3] = b"\xff" * (4096 * 2)  # the schema still reads, the pages behind it don't
    data[100:200] = b"\x00" * 100
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "prepare", [_directory, _not_a_database, _corrupt], ids=["directory", "not-a-db", "corrupt"]
)
def test_a_database_that_cannot_be_used_is_one_line(
    prepare: Callable[[Path], None], slack: SlackStandIn, evo: EvoVoiceStandIn,
    policy_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = policy_path.parent / "callbot.db"
    prepare(path)
    env = bot_environment("http", slack, evo, policy_path)
    text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
    assert "✗ DATABASE_URL:" in text


def test_a_database_migrated_by_a_newer_callbot_is_one_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn = sqlite3.connect(policy_path.parent / "callbot.db")
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at TEXT NOT NULL)")
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', '2030-01-01')")
    conn.commit()
    conn.close()
    env = bot_environment("http", slack, evo, policy_path)
    text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
    [line] = [line for line in text.splitlines() if "callbot cannot start" in line]
    assert "schema version 999, newer than this callbot knows" in line, text
    assert "reference" not in text, "a known refusal, not an unexpected failure"


def test_a_full_disk_at_start_up_is_one_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = bot_environment("http", slack, evo, policy_path)
    env["DATABASE_URL"] = "sqlite:////dev/full"
    text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
    assert "✗ DATABASE_URL: the disk holding /dev/full is full; free some space" in text, text


async def test_a_read_only_database_is_one_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    # Permissions don't stop root, a read-only mount does: the folder is mounted read-only in a
    # mount namespace of the bot's own.
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a folder read-only")
    folder = policy_path.parent / "ro"
    folder.mkdir()
    sqlite3.connect(folder / "callbot.db").close()
    probe = await asyncio.create_subprocess_exec(
        "unshare", "-m", "true",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    if await probe.wait() != 0:
        pytest.skip("no permission to make a mount namespace")
    env = bot_environment("http", slack, evo, policy_path)
    env["DATABASE_URL"] = f"sqlite:///{folder / 'callbot.db'}"
    text = await start_and_fail(env, policy_path.parent, argv_prefix=[
        "unshare", "-m", "sh", "-c", f"mount --bind -o ro {folder} {folder} && exec \"$@\"", "sh",
    ])
    assert "✗ DATABASE_URL:" in text and "read-only" in text


def test_a_port_in_use_is_one_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = bot_environment("http", slack, evo, policy_path, port=port)
        text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
    assert f"✗ PORT: {port} is already in use" in text


@pytest.mark.parametrize(
    ("policy_text", "expected"),
    [
        ('default_region = "US"\n', "roles: is required"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
    ids=["no-roles", "deeply-nested"],
)
def test_policy_files_an_operator_could_write_are_one_line(
    policy_text: str, expected: str, slack: SlackStandIn, evo: EvoVoiceStandIn,
    policy_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    policy_path.write_text(policy_text)
    env = bot_environment("http", slack, evo, policy_path)
    text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
    assert expected in text


def test_the_example_policy_files_placeholder_ids_stop_start_up(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README's quick start: `make run` (which copies callbot.example.toml to callbot.toml) stops
    with one line per problem until callbot.toml lists who may call, as it does for .env's
    placeholders; a bot whose roles name nobody real would tell every caller they lack a role."""
    example = Path(__file__).parent.parent / "callbot.example.toml"
    policy_path.write_text(example.read_text())
    env = bot_environment("http", slack, evo, policy_path)
    code, _, text = run_main([], env, policy_path.parent, monkeypatch, capsys, deadline=15)
    assert code == 2, text
    assert "callbot cannot start" in text and "Traceback" not in text, text
    [line] = [line for line in text.splitlines() if "U0EXAMPLEMANAGER" in line]
    assert line.startswith(f"  ✗ {policy_path}: still the placeholders of callbot.example.toml")
    for placeholder in ("S0EXAMPLELEADS", "U0EXAMPLEADMIN"):
        assert placeholder in line
    assert "Copy member ID" in line and "callbot init" in line
    assert slack.calls == []  # stopped before trying anything: no network needed to learn it


def test_a_policy_path_that_never_ends_is_refused(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = bot_environment("http", slack, evo, policy_path)
    env["CALLBOT_CONFIG"] = "/dev/zero"
    text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
    assert "✗ CALLBOT_CONFIG: /dev/zero is larger than" in text


def test_a_policy_without_a_roles_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "callbot.toml"
    path.write_text(POLICY.replace("[roles]", "[unused]").split("[unused]")[0])
    with pytest.raises(ConfigError) as raised:
        load_policy(path)
    assert "roles: is required" in str(raised.value)


@pytest.mark.parametrize("name", ["slack_bot_token", "slack_app_token", "slack_signing_secret"])
@pytest.mark.parametrize("junk", ["\r\n", "\n", "\r", " ", "\t", "\x00"])
def test_line_breaks_and_spaces_inside_tokens_are_named(name: str, junk: str) -> None:
    values = {**BASE, "slack_signing_secret": "abc"}
    values[name] = values[name] + junk + "x"
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, **values)
    text = str(raised.value)
    assert f"{name.upper()}: contains a line break, a space or a control character" in text
    assert values[name] not in text


@pytest.mark.parametrize("name", ["evovoice_username", "evovoice_password"])
@pytest.mark.parametrize("junk", ["\r\n", "\n", "\x00", "\x7f"])
def test_line_breaks_inside_the_evovoice_login_are_named(name: str, junk: str) -> None:
    values = {**BASE, name: "bot" + junk + "x"}
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, **values)
    text = str(raised.value)
    assert f"{name.upper()}: contains a line break or a control character" in text
    assert values[name] not in text


def test_a_space_inside_the_evovoice_password_is_a_password() -> None:
    settings = load_settings(_env_file=None, **{**BASE, "evovoice_password": "correct horse"})
    assert settings.evovoice_password.get_secret_value() == "correct horse"


def test_a_trailing_newline_from_a_secrets_file_is_trimmed() -> None:
    settings = load_settings(_env_file=None, **{**BASE, "slack_bot_token": "xoxb-1\n"})
    assert settings.slack_bot_token.get_secret_value() == "xoxb-1"


@pytest.mark.parametrize("url", [
    "https://bot@example.com:hunter2@team.evovoice.io",
    "https://bot:hunter2@team.evovoice.io",
    "https://hunter2@team.evovoice.io/",
])
def test_credentials_inside_evovoice_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, **BASE, evovoice_url=url)
    text = str(raised.value)
    assert "EVOVOICE_URL: must not contain a user name or password" in text
    assert "hunter2" not in text


async def test_line_break_in_a_token_stops_python_m_bot_with_one_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    env = bot_environment("http", slack, evo, policy_path)
    env["SLACK_BOT_TOKEN"] = "xoxb-test\r\nX-Injected: 1"
    text = await start_and_fail(env, policy_path.parent)
    assert "✗ SLACK_BOT_TOKEN: contains a line break" in text
    assert "X-Injected" not in text


async def test_a_refused_app_token_stops_start_up_with_one_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    # slack_sdk's Socket Mode client would ask again every few seconds, for ever.
    env = bot_environment("socket", slack, evo, policy_path)
    env["SLACK_APP_TOKEN"] = "xapp-revoked"
    text = await start_and_fail(env, policy_path.parent)
    assert "✗ SLACK_APP_TOKEN: Slack refused it (invalid_auth)" in text
    assert "xapp-revoked" not in text
    assert slack.socket_connections == 0


@pytest.mark.parametrize("part", ["database", "user"])
def test_a_postgres_database_or_user_that_does_not_exist_names_database_url(
    part: str, slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # The server answers, but refuses the URL's database or login (a wrong password is refused the
    # same way, once the server asks for one): the operator fixes DATABASE_URL, not a bug.
    parts = urlsplit(postgres_url())
    if part == "database":
        wrong = parts._replace(path="/callbot_no_such_database")
    else:
        wrong = parts._replace(netloc=f"callbot_no_such_user:s3cret-pw@{parts.hostname}"
                                      f"{f':{parts.port}' if parts.port else ''}")
    env = bot_environment("http", slack, evo, policy_path, database_url=urlunsplit(wrong))
    text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
    assert "✗ DATABASE_URL: " in text, text
    assert "does not exist" in text, text
    assert "reference" not in text, "a refused URL, not an unexpected failure"
    assert "s3cret-pw" not in text


def test_a_role_that_may_not_migrate_the_schema_is_one_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """README (Databases): the bots run as a role that owns nothing, the owner migrating after
    each upgrade. Started before the owner did, the bot was a traceback of the driver's."""
    async def as_the_bots_role() -> AsyncIterator[str]:
        async with fresh_database(POSTGRESQL, tmp_path) as url:
            owner = Database(url)
            await owner.open(migrations=MIGRATIONS[:-1])  # before the upgrade
            await owner.close()
            async with role_owning_nothing(url) as limited:
                yield limited

    roles = as_the_bots_role()
    with asyncio.Runner() as setup:  # one loop for the role's making and dropping
        limited = setup.run(anext(roles))
        try:
            env = bot_environment("http", slack, evo, policy_path, database_url=limited)
            text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
        finally:
            with pytest.raises(StopAsyncIteration):
                setup.run(anext(roles))
    latest = max(m.version for m in MIGRATIONS)
    [line] = [line for line in text.splitlines() if "callbot cannot start" in line]
    assert (f"the database is at schema version {latest - 1} and this callbot needs {latest}, "
            "but this role may not migrate it (must be owner of table ") in line, text
    assert "start this callbot once as the role that owns the tables" in line, text
    assert "reference" not in text, "a known refusal, not an unexpected failure"


def test_a_postgres_port_out_of_range_names_database_url(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://callbot:s3cret-pw@127.0.0.1:543200/callbot"  # two digits too many
    env = bot_environment("http", slack, evo, policy_path, database_url=url)
    text = fail_in_process(env, policy_path.parent, monkeypatch, capsys)
    assert "✗ DATABASE_URL: the port is not a port number" in text, text
    assert "reference" not in text and "s3cret-pw" not in text


def test_an_unforeseen_start_up_failure_quoting_a_number_shows_it_masked() -> None:
    from bot.runtime import unexpected_start_up

    [line] = unexpected_start_up(RuntimeError("dialling +18144043093 failed")).problems
    assert "+18144043093" not in line and "3093" in line


async def test_a_secret_file_saved_with_a_byte_order_mark_holds_only_its_secret(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    # Windows' Notepad saved UTF-8 with a byte order mark until 2019: invisible in every editor,
    # it was read as the token's first character, and Slack refused the token.
    env = bot_environment("http", slack, evo, policy_path)
    token = env.pop("SLACK_BOT_TOKEN")
    secret = policy_path.parent / "slack-bot-token"
    secret.write_text(token + "\r\n", encoding="utf-8-sig")
    env["SLACK_BOT_TOKEN_FILE"] = str(secret)
    bot = await BotProcess.start(env, policy_path.parent)
    try:
        await bot.wait_for_line("callbot ready")
    finally:
        code = await bot.stop()
    assert code == 0, bot.output()
