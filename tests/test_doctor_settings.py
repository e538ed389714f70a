"""`callbot check` on settings as an operator writes them: spellings the bot accepts, and the
secrets-file (`NAME_FILE`) mistakes, each said once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.ops.check import Status
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from tests.checkups import (
    by_subject,
    check,
    check_from_environment,
    failures,
    migrated_database,
)
from tests.conftest import POLICY, bot_environment
from tests.processes import run_cli

pytestmark = pytest.mark.usefixtures("no_ambient_settings")


async def test_lower_case_log_level_and_format_are_accepted(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, LOG_LEVEL="debug", LOG_FORMAT=" JSON ")
    settings = by_subject(findings)["Settings"]
    assert settings.status is Status.PASS, failures(findings)


async def test_settings_with_spaces_around_them_are_read_without(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `docker run --env-file` and a quoted Kubernetes value keep the spaces a line was written
    # with (.env's own reader drops them). A URL kept them: Evo Voice "could not be reached"
    # (the bot waited, not ready, for ever), and a SQLite file was named with the space, a new
    # and empty database beside the one meant; LOG_LEVEL refused " info " where LOG_FORMAT
    # took " json ".
    database = await migrated_database(policy_path)
    env = bot_environment("socket", slack, evo, policy_path)
    env.update({
        "EVOVOICE_URL": f" {evo.url} ", "SLACK_API_URL": f" {slack.api_url}\t",
        "DATABASE_URL": f"sqlite:///{database} ", "LOG_LEVEL": " info ",
        "EVOVOICE_ACCOUNT_ID": " acct-1 ",
    })
    code, out = await check_from_environment(env, policy_path.parent, monkeypatch)
    assert code == 0, out
    assert f"✓ Database: {database} is reachable and migrated" in out, out
    assert f"logs in at {evo.url}\n" in out, out


async def test_a_setting_given_twice_fails_even_when_everything_else_is_right(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = bot_environment("socket", slack, evo, policy_path)
    secret = tmp_path / "password"
    secret.write_text(env["EVOVOICE_PASSWORD"] + "\n")
    env["EVOVOICE_PASSWORD_FILE"] = str(secret)
    code, out = await check_from_environment(env, policy_path.parent, monkeypatch)
    assert code == 1, out
    assert ("✗ Setting EVOVOICE_PASSWORD: both EVOVOICE_PASSWORD and EVOVOICE_PASSWORD_FILE are "
            "set; keep one") in out
    assert env["EVOVOICE_PASSWORD"] not in out


async def test_an_unreadable_secrets_file_is_one_line_not_also_a_missing_setting(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = bot_environment("socket", slack, evo, policy_path)
    del env["SLACK_BOT_TOKEN"]
    env["SLACK_BOT_TOKEN_FILE"] = str(tmp_path / "missing")
    code, out = await check_from_environment(env, policy_path.parent, monkeypatch)
    assert code == 1
    token_lines = [line for line in out.splitlines() if "SLACK_BOT_TOKEN" in line
                   and line.startswith("✗")]
    assert token_lines == [f"✗ Setting SLACK_BOT_TOKEN: cannot read SLACK_BOT_TOKEN_FILE "
                           f"({tmp_path / 'missing'}): No such file or directory"], out


async def test_a_secrets_file_named_in_dot_env_is_a_problem_not_a_silent_default(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NAME_FILE is read from the environment only. Named in .env it was ignored without a
    # word: DATABASE_URL fell back to ./callbot.db, a new and empty database, and `callbot
    # check` passed it.
    database = await migrated_database(policy_path)
    secret = policy_path.parent / "database_url"
    secret.write_text(f"sqlite:///{database}\n")
    env = bot_environment("socket", slack, evo, policy_path)
    del env["DATABASE_URL"]
    folder = policy_path.parent / "app"
    folder.mkdir()
    (folder / ".env").write_text(f"DATABASE_URL_FILE={secret}\n")
    code, out = await check_from_environment(env, folder, monkeypatch)
    assert code == 1, out
    assert (f"✗ Setting DATABASE_URL_FILE: named in {Path('.env')}, where NAME_FILE is not read "
            "(the environment only): set it in the environment, or DATABASE_URL itself in "
            ".env") in out, out

    code, _, err = await run_cli([], env, folder)
    assert code == 2
    assert "  ✗ DATABASE_URL_FILE: named in .env, where NAME_FILE is not read" in err, err


async def test_an_empty_callbot_config_means_the_default_file(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = bot_environment("socket", slack, evo, policy_path)
    env["CALLBOT_CONFIG"] = ""  # as `.env.example` leaves an optional setting
    folder = tmp_path / "here"
    folder.mkdir()
    (folder / "callbot.toml").write_text(policy_path.read_text())
    code, out = await check_from_environment(env, folder, monkeypatch)
    assert "✓ Policy file: callbot.toml is valid" in out, out
    assert not [line for line in out.splitlines() if line.startswith("✗ Policy")], out


async def test_two_aliases_typed_alike_for_different_flows_are_refused(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    # Typed in Slack, `Page`, `page` and `page_` are one word: which flow would it dial?
    policy_path.write_text(POLICY.replace(
        'page = "flow-page"', 'page = "flow-page"\nPage_ = "flow-other"\nPAGE = "flow-page"'))
    policy = by_subject(await check(slack, evo, policy_path))["Policy file"]
    assert policy.status is Status.FAIL
    assert ("aliases that are one word when typed name different flows: 'page' (flow-page) and "
            "'Page_' (flow-other) and 'PAGE' (flow-page); keep one of each") in policy.detail
    policy_path.write_text(POLICY.replace('page = "flow-page"',
                                          'page = "flow-page"\nPAGE = "flow-page"'))
    policy = by_subject(await check(slack, evo, policy_path))["Policy file"]
    assert policy.status is Status.PASS, policy  # the same flow twice: no doubt


async def test_the_policy_file_named_in_dot_env_is_the_one_checked_when_a_setting_is_wrong(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policies" / "ours.toml"
    policy.parent.mkdir()
    policy.write_text(POLICY.replace("Manager =", "Manger ="))
    (tmp_path / ".env").write_text(
        f"CALLBOT_CONFIG={policy}\nSLACK_APP_TOKEN=xapp-1\nEVOVOICE_USERNAME=u\n"
        "EVOVOICE_PASSWORD=p\n"
    )  # and no SLACK_BOT_TOKEN

    code, _, err = await run_cli([], {}, tmp_path)
    assert code == 2
    assert err.splitlines() == [
        "callbot cannot start; fix the configuration:",
        "  ✗ SLACK_BOT_TOKEN: is required but not set",
        f"  ✗ {policy}: roles: unknown role 'Manger' (known: Manager, SystemAdministrator)",
    ], err

    code, out, _ = await run_cli(["check"], {}, tmp_path)
    assert code == 1
    assert "✗ Setting SLACK_BOT_TOKEN: is required but not set" in out
    assert f"✗ Policy file: {policy}: roles: unknown role 'Manger'" in out, out
    assert "callbot.toml" not in out


async def test_a_policy_allowing_no_region_is_refused(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(POLICY.replace('allowed_regions = ["US", "CA"]', "allowed_regions = []"))
    policy = by_subject(await check(slack, evo, policy_path))["Policy file"]
    assert policy.status is Status.FAIL
    assert policy.detail == (f"{policy_path}: allowed_regions: is empty: no call could be placed; "
                             "list at least one region")


async def test_region_codes_may_be_written_in_lower_case(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(POLICY.replace('default_region = "US"', 'default_region = "us"')
                           .replace('["US", "CA"]', '["us", "ca"]'))
    policy = by_subject(await check(slack, evo, policy_path))["Policy file"]
    assert policy.status is Status.PASS, policy


async def test_the_default_caller_id_may_be_written_as_a_national_number(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(POLICY.replace('"+18145550100"', '"(814) 555-0100"'))
    caller_id = by_subject(await check(slack, evo, policy_path))["Default caller ID"]
    assert caller_id.status is Status.PASS, caller_id


async def test_people_ids_are_looked_up_too(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    slack.only_added_users_exist = True
    slack.users.update({"U0MANAGER": {}, "U0ADMIN": {}})
    policy_path.write_text(POLICY + '\n[people]\nU0GONE = "+18145553093"\n')
    [problem] = failures(await check(slack, evo, policy_path))
    assert problem.subject == "Slack IDs"
    assert problem.detail.startswith("U0GONE: "), problem
    assert problem.detail.endswith("(listed in [people])"), problem


@pytest.mark.parametrize("other", ["evovoice.io", "https://bot:hunter2@evovoice.io"])
async def test_a_malformed_evovoice_other_url_is_named_and_never_echoes_a_password(
    other: str, slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It is used only once EVOVOICE_URL refuses the login: then a host without its scheme was
    # skipped without a word, and one with a password made the check itself fail ("report this
    # to the callbot maintainers") and start-up an "unexpected" failure.
    evo.refused_login = "unauthenticated"
    evo.password = "not-the-bot's"
    env = {**bot_environment("socket", slack, evo, policy_path), "EVOVOICE_OTHER_URL": other}
    code, out = await check_from_environment(env, policy_path.parent, monkeypatch)
    assert code == 1, out
    assert "✗ Setting EVOVOICE_OTHER_URL: must" in out, out
    assert "hunter2" not in out
    assert "maintainers" not in out, out


async def test_the_database_is_checked_while_another_setting_is_wrong(tmp_path: Path) -> None:
    """A missing SLACK_BOT_TOKEN says nothing about DATABASE_URL: its line is shown all the
    same, so a wrong database path isn't found only once the token is fixed."""
    (tmp_path / "callbot.toml").write_text(POLICY)
    not_a_database = tmp_path / "calls.db"
    not_a_database.write_text("these are notes, not a database\n" * 100)
    (tmp_path / ".env").write_text(
        f"DATABASE_URL=sqlite:///{not_a_database}\nSLACK_APP_TOKEN=xapp-1\n"
        "EVOVOICE_USERNAME=u\nEVOVOICE_PASSWORD=p\n"
    )  # and no SLACK_BOT_TOKEN
    code, out, _ = await run_cli(["check"], {}, tmp_path)
    assert code == 1
    assert "✗ Setting SLACK_BOT_TOKEN: is required but not set" in out
    assert "✗ Database: " in out and "not a database" in out, out
