"""Start-up: bad configuration stops the bot with one line per problem, naming the setting."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bot.config import ConfigError, load_configuration, load_policy, load_settings
from bot.standins.evovoice import EvoVoiceStandIn
from tests.conftest import POLICY, QUICK_VOICE_RETRY, BotFactory
from tests.processes import run_bot_process

BASE = {
    "slack_bot_token": "xoxb-1",
    "slack_app_token": "xapp-1",
    "evovoice_username": "u",
    "evovoice_password": "p",
}


def problems_of(policy_text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "callbot.toml"
    path.write_text(policy_text)
    with pytest.raises(ConfigError) as raised:
        load_policy(path)
    return raised.value.problems


def test_missing_settings_are_each_named() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None)
    text = "\n".join(raised.value.problems)
    for name in ("SLACK_BOT_TOKEN", "EVOVOICE_USERNAME", "EVOVOICE_PASSWORD"):
        assert f"{name}: is required" in text


def test_wrong_tokens_and_urls_are_explained() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            _env_file=None, **{**BASE, "slack_bot_token": "xoxp-user", "slack_app_token": "xoxb-1",
                               "evovoice_url": "team.evovoice.io", "port": "http"}
        )
    text = "\n".join(raised.value.problems)
    assert "SLACK_BOT_TOKEN: must be a bot token" in text
    assert "SLACK_APP_TOKEN: must be an app-level token" in text
    assert "EVOVOICE_URL: must be an http:// or https:// URL" in text
    assert "PORT:" in text
    assert len(raised.value.problems) == 4


def test_settings_out_of_range_are_each_named() -> None:
    too_low = {"evovoice_timeout": "0", "evovoice_retry_seconds": "0", "lease_seconds": "2",
               "call_poll_seconds": "0", "startup_retry_seconds": "0", "port": "-1"}
    too_high = {"evovoice_timeout": "121", "evovoice_retry_seconds": "31", "lease_seconds": "301",
                 "call_poll_seconds": "61", "startup_retry_seconds": "31", "port": "65536"}
    for values in (too_low, too_high):
        with pytest.raises(ConfigError) as raised:
            load_settings(_env_file=None, **BASE, **values)
        named = sorted(problem.split(":")[0] for problem in raised.value.problems)
        assert named == sorted(name.upper() for name in values), raised.value.problems
    at_the_bounds = load_settings(_env_file=None, **BASE, evovoice_timeout="120", lease_seconds="3")
    assert at_the_bounds.evovoice_timeout == 120 and at_the_bounds.lease_seconds == 3


def test_http_mode_needs_the_signing_secret() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, **{**BASE, "slack_app_token": ""})
    assert "SLACK_SIGNING_SECRET is required in HTTP mode" in raised.value.problems[0]


def test_secrets_never_print() -> None:
    settings = load_settings(_env_file=None, **{**BASE, "evovoice_password": "hunter2"})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


# Passwords holding what ends a URL's user information or host, unencoded: the driver would take
# part of the password for the host or the port and show it in its errors.
MISREAD_PASSWORDS = ["Hunter2@Secret", "Hunter2/Secret", "Hunter2#Secret", "Hunter2?Secret",
                     "12/34"]


@pytest.mark.parametrize("password", MISREAD_PASSWORDS)
def test_a_postgresql_url_the_driver_would_misread_is_refused_without_echoing_it(
    password: str,
) -> None:
    url = f"postgresql://callbot:{password}@db.internal:5432/callbot"
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, **BASE, database_url=url)
    [problem] = raised.value.problems
    assert problem.startswith("DATABASE_URL: ") and "percent-encode" in problem, problem
    assert "Hunter2" not in problem and "Secret" not in problem and "34" not in problem


@pytest.mark.parametrize("url", [
    "postgresql://callbot:Hunter2%40Secret%2F@db.internal:5432/callbot",
    "postgresql://callbot:Hunter2:Secret@db.internal/callbot",
    "postgresql://:Hunter2@db.internal/callbot",
    "postgresql://callbot@[::1]:5432/callbot",
    "postgresql://callbot:Hunter2@a:5432,b:5433/callbot?user=me@corp",
    "postgresql:///callbot?host=/var/run/postgresql",
])
def test_postgresql_urls_the_driver_reads_as_written_are_accepted(url: str) -> None:
    assert load_settings(_env_file=None, **BASE, database_url=url).database_url == url


def test_slack_api_url_gets_its_trailing_slash() -> None:
    settings = load_settings(_env_file=None, **BASE, slack_api_url="http://127.0.0.1:9/api")
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"


def test_policy_problems_are_each_named(tmp_path: Path) -> None:
    problems = problems_of(
        """
        default_region = "USA"
        allowed_regions = ["US", "XX"]
        default_caller_id = "call me"
        surprise = 1
        [roles]
        Manger = ["U0A"]
        Manager = ["alice"]
        [flows]
        page = " "
        """,
        tmp_path,
    )
    text = "\n".join(problems)
    assert "default_region: 'USA' is not a region code" in text
    assert "allowed_regions: not region codes: XX" in text
    assert "surprise: is not a known setting" in text
    assert "unknown role 'Manger'" in text
    assert "'alice' are not Slack user IDs" in text
    assert "flows: aliases with an empty flow ID: page" in text
    assert all(str(tmp_path) in p for p in problems)


def test_policy_without_anybody_allowed_is_refused(tmp_path: Path) -> None:
    problems = problems_of('[roles]\nManager = []\n', tmp_path)
    assert "nobody may place calls" in problems[0]


def test_policy_that_is_not_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in problems_of("roles = [", tmp_path)[0]


def test_missing_policy_file_and_settings_are_reported_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("SLACK_", "EVOVOICE_", "CALLBOT_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_configuration()
    text = "\n".join(raised.value.problems)
    assert "SLACK_BOT_TOKEN: is required" in text
    assert "CALLBOT_CONFIG: callbot.toml does not exist" in text


def test_example_policy_file_is_valid() -> None:
    policy = load_policy(Path(__file__).parent.parent / "callbot.example.toml")
    assert policy.roles["Manager"] == ("U0EXAMPLEMANAGER", "S0EXAMPLELEADS")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"password": "wrong"},
            "EVOVOICE_USERNAME / EVOVOICE_PASSWORD / EVOVOICE_URL: Evo Voice at",
        ),
        ({"roles": ("Agent",)}, "lacks the Manager or SystemAdministrator role"),
        (
            {"accounts": (("a-1", "One"), ("a-2", "Two"))},
            "EVOVOICE_ACCOUNT_ID: the login reaches "
            "several accounts; set it to one of: a-1 (One), a-2 (Two)",
        ),
    ],
)
async def test_voice_login_problems_stop_start_up(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, change: dict[str, object], expected: str
) -> None:
    if "password" in change:
        evo.password = str(change["password"])
    if "roles" in change:
        evo.roles = change["roles"]  # type: ignore[assignment]
    if "accounts" in change:
        evo.accounts = change["accounts"]  # type: ignore[assignment]
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http")
    assert expected in "\n".join(raised.value.problems)


async def test_unknown_account_id_is_refused(bot_factory: BotFactory) -> None:
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http", EVOVOICE_ACCOUNT_ID="acct-9")
    assert "EVOVOICE_ACCOUNT_ID: 'acct-9' is not an account this login reaches" in str(raised.value)


async def test_alias_and_caller_id_are_checked_against_the_account(
    bot_factory: BotFactory,
) -> None:
    policy = POLICY.replace('"flow-page"', '"flow-gone"').replace("+18145550100", "+18145550177")
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http", policy=policy)
    # The first ✗ of the checks `callbot check` makes, in its words and with its fix.
    [problem] = raised.value.problems
    assert problem.startswith("Flow alias page: flow ID 'flow-gone' does not exist in account")
    assert "(fix: in [flows] of the policy file, set page to one of the account's flows" in problem

    policy = POLICY.replace("+18145550100", "+18145550177")
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http", policy=policy)
    [problem] = raised.value.problems
    assert problem.startswith("Default caller ID: +1 814 ••• 0177 is not one of account acct-1's")


async def test_unreachable_voice_api_is_named_while_the_bot_waits(bot_factory: BotFactory) -> None:
    # Not a reason to exit (tests/test_degraded_start.py): the bot waits, and says what for.
    bot = await bot_factory("http", EVOVOICE_URL="http://127.0.0.1:9", **QUICK_VOICE_RETRY)
    assert not bot.runtime.ready
    assert "EVOVOICE_URL: cannot connect" in str(bot.runtime.waiting_for)


# `python -m bot` serving Slack until SIGTERM, then exiting 0: tests/test_shutdown.py (both modes,
# a call in flight) and tests/test_logging.py (HTTP mode, JSON lines).
async def test_python_m_bot_reports_bad_configuration_and_exits_2(tmp_path: Path) -> None:
    process = await run_bot_process({"CALLBOT_CONFIG": str(tmp_path / "x")}, tmp_path)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    text = stderr.decode()
    assert "callbot cannot start" in text and "✗ SLACK_BOT_TOKEN: is required" in text


async def test_rejected_slack_token_is_a_clear_start_up_error(bot_factory: BotFactory) -> None:
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http", SLACK_BOT_TOKEN="xoxb-revoked")
    assert "SLACK_BOT_TOKEN: Slack refused it (invalid_auth)" in str(raised.value)


def test_placeholders_from_env_example_are_named(tmp_path: Path) -> None:
    import shutil

    shutil.copy(Path(__file__).parent.parent / ".env.example", tmp_path / ".env")
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=tmp_path / ".env")
    text = "\n".join(raised.value.problems)
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "EVOVOICE_PASSWORD"):
        assert f"{name}: still holds the placeholder" in text


async def test_an_account_without_a_name_is_still_an_account() -> None:
    from bot.evovoice.client import AuthStatus
    from bot.services import choose_account

    class TwoAccountsOneName:
        async def auth_status(self) -> AuthStatus:
            return AuthStatus.model_validate(
                {
                    "isAuthenticated": True,
                    "roles": ["Manager"],
                    "accountIds": ["a-1", "a-2"],
                    "accountNames": ["One"],
                }
            )

    settings = load_settings(_env_file=None, **BASE)
    with pytest.raises(ConfigError) as raised:
        await choose_account(TwoAccountsOneName(), settings)  # type: ignore[arg-type]
    assert "set it to one of: a-1 (One), a-2 (a-2)" in str(raised.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_setting_that_is_no_finite_number_says_so(value: str) -> None:
    # "nan" passes no bound, and was told "should be less than or equal to 120", which a value
    # meant as a number of seconds isn't about.
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, **BASE, evovoice_timeout=value)
    [problem] = raised.value.problems
    assert problem.startswith("EVOVOICE_TIMEOUT:") and "finite number" in problem, problem
