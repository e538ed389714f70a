"""`callbot check`: every check against the stand-ins, each ✗ with its fix, and nothing changed."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from bot.ops import check as doctor
from bot.ops.check import Status, report, run_checkup
from bot.ops.checkup import Checkup
from bot.ops.findings import Finding, passed
from bot.config import is_example_id
from bot.standins.evovoice import ErrorStatus, EvoVoiceStandIn, HtmlPage
from bot.standins.slack import SlackStandIn
from bot.storage.database import MIGRATIONS, Database, Migration
from tests.checkups import (
    by_subject,
    check,
    check_from_environment,
    failures,
    migrated_database,
)
from tests.conftest import POLICY, QUICK_VOICE_RETRY, BotFactory, bot_environment
from tests.processes import run_cli

pytestmark = pytest.mark.usefixtures("no_ambient_settings")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_good_set_up_passes_every_check_and_changes_nothing(
    mode: str, slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    await migrated_database(policy_path)
    before = snapshot(policy_path.parent)

    findings = await check(slack, evo, policy_path, mode)

    assert failures(findings) == []
    text, code = report(findings)
    assert code == 0 and text.endswith("All checks passed.")
    subjects = by_subject(findings)
    for subject in ("Settings", "Policy file", "Slack bot token", "Slack scopes",
                    "Evo Voice login", "Evo Voice role", "Evo Voice account", "Flow alias page",
                    "Default caller ID", "Database"):
        assert subjects[subject].status is Status.PASS, subjects[subject]
    assert "usergroups:read" in subjects["Slack scopes"].detail
    assert "Manager" in subjects["Evo Voice role"].detail
    assert "acct-1 (Acme Ops)" in subjects["Evo Voice account"].detail
    assert "Pager Duty Page" in subjects["Flow alias page"].detail
    assert f"schema version {max(m.version for m in MIGRATIONS)}" in subjects["Database"].detail
    if mode == "socket":
        assert subjects["Socket Mode token"].status is Status.PASS
        assert len(slack.calls_to("apps.connections.open")) == 1
        assert slack.socket_connections == 0, "the doctor must not connect the websocket"
    else:
        assert subjects["Socket Mode token"].status is Status.SKIP
        assert "callbot manifest --http" in subjects["Socket Mode token"].detail
    # Read-only everywhere: Slack was only asked who we are, Evo Voice only read, the DB untouched.
    assert {c.method for c in slack.calls} <= {"auth.test", "apps.connections.open",
                                               "users.info", "usergroups.users.list"}
    assert "2 users and 1 user group found" in subjects["Slack IDs"].detail
    assert {r.method for r in evo.requests} == {"GET"}
    assert snapshot(policy_path.parent) == before


async def test_a_database_not_created_yet_passes_and_is_not_created(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    missing = policy_path.parent / "data" / "callbot.db"
    findings = await check(slack, evo, policy_path, DATABASE_URL=f"sqlite:///{missing}")
    database = by_subject(findings)["Database"]
    assert database.status is Status.PASS and "does not exist yet" in database.detail
    assert not missing.parent.exists()


async def test_missing_settings_are_each_a_line_and_the_rest_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where the default database would be
    findings = await run_checkup(_env_file=None)
    subjects = by_subject(findings)
    token = subjects["Setting SLACK_BOT_TOKEN"]
    assert token.status is Status.FAIL and token.detail == "is required but not set"
    assert token.fix is not None and "OAuth & Permissions" in token.fix
    assert subjects["Setting EVOVOICE_PASSWORD"].status is Status.FAIL
    policy = subjects["Policy file"]
    assert policy.status is Status.FAIL and "copy callbot.example.toml" in (policy.fix or "")
    for later in ("Slack bot token", "Evo Voice login"):
        assert subjects[later].status is Status.SKIP
    # DATABASE_URL needs no other setting: it is checked all the same (here, its default).
    database = subjects["Database"]
    assert database.status is Status.PASS and "does not exist yet" in database.detail
    assert report(findings)[1] == 1


async def test_malformed_settings_say_what_is_wrong(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, SLACK_BOT_TOKEN="xoxp-user-token",
                           LOG_FORMAT="yaml")
    subjects = by_subject(findings)
    assert "must be a bot token starting with xoxb-" in subjects["Setting SLACK_BOT_TOKEN"].detail
    assert subjects["Setting LOG_FORMAT"].status is Status.FAIL


async def test_http_mode_without_signing_secret(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, SLACK_SIGNING_SECRET="")
    [problem] = failures(findings)
    assert problem.subject == "Settings" and "SLACK_SIGNING_SECRET is required" in problem.detail


async def test_invalid_policy_file(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(POLICY.replace("Manager =", "Manger ="))
    findings = await check(slack, evo, policy_path)
    policy = by_subject(findings)["Policy file"]
    assert policy.status is Status.FAIL and "unknown role 'Manger'" in policy.detail
    assert policy.fix == f"edit {policy_path} (callbot.example.toml shows every key)"
    assert by_subject(findings)["Slack scopes"].status is Status.SKIP


async def test_refused_slack_token(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, SLACK_BOT_TOKEN="xoxb-revoked")
    token = by_subject(findings)["Slack bot token"]
    assert token.status is Status.FAIL and "invalid_auth" in token.detail
    assert "Bot User OAuth Token" in (token.fix or "")
    assert by_subject(findings)["Slack scopes"].status is Status.SKIP


async def test_unreachable_slack(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, SLACK_API_URL="http://127.0.0.1:9/api/")
    token = by_subject(findings)["Slack bot token"]
    assert token.status is Status.FAIL and "cannot reach http://127.0.0.1:9/api/" in token.detail
    assert "SLACK_API_URL" in (token.fix or "")


async def test_missing_scopes_are_named_with_why_they_are_needed(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    assert slack.bot_scopes is not None
    slack.bot_scopes.remove("usergroups:read")
    slack.bot_scopes.remove("commands")
    scopes = by_subject(await check(slack, evo, policy_path))["Slack scopes"]
    assert scopes.status is Status.FAIL
    assert scopes.detail == ("the bot token lacks commands (the /call command), usergroups:read "
                             "(roles given to user groups: S0LEADS)")
    assert "reinstall the app" in (scopes.fix or "")


async def test_usergroups_scope_is_needed_only_when_roles_name_groups(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    assert slack.bot_scopes is not None
    slack.bot_scopes.remove("usergroups:read")
    policy_path.write_text(POLICY.replace(', "S0LEADS"', ""))
    scopes = by_subject(await check(slack, evo, policy_path))["Slack scopes"]
    assert scopes.status is Status.PASS and "usergroups:read" not in scopes.detail


async def test_scopes_unknown_without_slacks_header(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    slack.bot_scopes = None
    scopes = by_subject(await check(slack, evo, policy_path))["Slack scopes"]
    assert scopes.status is Status.FAIL and "x-oauth-scopes" in scopes.detail


async def test_refused_app_token(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, "socket", SLACK_APP_TOKEN="xapp-revoked")
    socket = by_subject(findings)["Socket Mode token"]
    assert socket.status is Status.FAIL and "invalid_auth" in socket.detail
    assert "connections:write" in (socket.fix or "")


async def test_refused_evovoice_login_skips_what_needs_it(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    evo.password = "changed-by-someone"
    findings = await check(slack, evo, policy_path)
    subjects = by_subject(findings)
    login = subjects["Evo Voice login"]
    assert login.status is Status.FAIL and "refused the login 'bot@example.com'" in login.detail
    assert "EVOVOICE_PASSWORD" in (login.fix or "")
    for later in ("Evo Voice role", "Evo Voice account", "Flow aliases"):
        assert subjects[later].status is Status.SKIP
    assert "evo-secret-password" not in report(findings)[0]


async def test_unreachable_evovoice(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, EVOVOICE_URL="http://127.0.0.1:9",
                           **QUICK_VOICE_RETRY)
    login = by_subject(findings)["Evo Voice login"]
    assert login.status is Status.FAIL and "cannot connect to http://127.0.0.1:9" in login.detail


async def test_evovoice_server_error(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    evo.queue("GET", "/auth/status", ErrorStatus(500, "Database is down"))
    login = by_subject(await check(slack, evo, policy_path))["Evo Voice login"]
    assert login.status is Status.FAIL and "Database is down" in login.detail


async def test_evovoice_answering_a_maintenance_page(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    # What start-up waits for (tests/test_degraded_start.py): said as such, with the URL to check
    # should it last.
    evo.queue("GET", "/auth/status", HtmlPage())
    login = by_subject(await check(slack, evo, policy_path))["Evo Voice login"]
    assert login.status is Status.FAIL and "(an HTML page, not JSON)" in login.detail
    assert login.fix is not None and "maintenance page" in login.fix
    assert f"EVOVOICE_URL ({evo.url})" in login.fix and "https://evovoice.io" in login.fix


async def test_login_without_the_manager_role(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    evo.roles = ["Agent"]
    findings = await check(slack, evo, policy_path)
    role = by_subject(findings)["Evo Voice role"]
    assert role.status is Status.FAIL and "its roles: Agent" in role.detail
    assert role.fix == "grant that Evo Voice user the Manager role on the account"
    assert by_subject(findings)["Evo Voice account"].status is Status.SKIP


async def test_ambiguous_account(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    evo.accounts = [("acct-1", "Acme Ops"), ("acct-2", "Acme Sales")]
    account = by_subject(await check(slack, evo, policy_path))["Evo Voice account"]
    assert account.status is Status.FAIL
    assert "several accounts" in account.detail and "acct-2 (Acme Sales)" in account.detail
    assert "EVOVOICE_ACCOUNT_ID" in (account.fix or "")


async def test_unknown_account_id(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, EVOVOICE_ACCOUNT_ID="acct-9")
    account = by_subject(findings)["Evo Voice account"]
    assert account.status is Status.FAIL and "'acct-9' is not an account" in account.detail


async def test_each_flow_alias_is_its_own_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(
        POLICY.replace(
            'page = "flow-page"\n', 'page = "flow-page"\nwake = "flow-wake"\ngone = "flow-gone"\n'
        )
    )
    findings = await check(slack, evo, policy_path)
    subjects = by_subject(findings)
    assert subjects["Flow alias page"].status is Status.PASS
    assert subjects["Flow alias wake"].status is Status.PASS
    gone = subjects["Flow alias gone"]
    assert gone.status is Status.FAIL and "'flow-gone' does not exist" in gone.detail
    assert "Escalation (flow-esc)" in (gone.fix or "")
    assert [f.subject for f in failures(findings)] == ["Flow alias gone"]


async def test_default_caller_id_not_owned(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(POLICY.replace("+18145550100", "+18145550177"))
    findings = await check(slack, evo, policy_path)
    caller = by_subject(findings)["Default caller ID"]
    assert caller.status is Status.FAIL and "+1 814 ••• 0177" in caller.detail
    assert "+18145550100, +18145550101" in (caller.fix or "")
    assert "+18145550177" not in report(findings)[0], "only the account's own numbers in full"


async def test_no_default_caller_id_is_not_a_problem(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(POLICY.replace('default_caller_id = "+18145550100"', ""))
    findings = await check(slack, evo, policy_path)
    assert by_subject(findings)["Default caller ID"].status is Status.SKIP
    assert failures(findings) == []


async def test_a_database_an_older_callbot_migrated_passes_as_the_bot_migrates_it_at_start_up(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    """An upgrade's check, run before the new version's first start (a deployment gated on it):
    the bot brings the schema up to date itself, so that is no problem to fix."""
    db = Database(f"sqlite:///{policy_path.parent / 'callbot.db'}")
    await db.open(migrations=MIGRATIONS[:-1])
    await db.close()
    findings = await check(slack, evo, policy_path)
    database = by_subject(findings)["Database"]
    assert failures(findings) == []
    latest = max(m.version for m in MIGRATIONS)
    assert (f"at schema version {latest - 1}; the bot migrates it to {latest} at start-up "
            "(back the file up first: callbot backup)") in database.detail
    db = Database(f"sqlite:///{policy_path.parent / 'callbot.db'}")
    await db.open_read_only()
    assert await db.schema_version() == latest - 1, "the doctor must not migrate"
    await db.close()


async def test_database_newer_than_the_code(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    db = Database(f"sqlite:///{policy_path.parent / 'callbot.db'}")
    await db.open(migrations=[*MIGRATIONS, Migration(999, "from the future", "SELECT 1")])
    await db.close()
    database = by_subject(await check(slack, evo, policy_path))["Database"]
    assert database.status is Status.FAIL and "schema version 999, newer" in database.detail


async def test_a_file_that_is_not_a_database(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    (policy_path.parent / "callbot.db").write_text("these are not the tables you are looking for")
    database = by_subject(await check(slack, evo, policy_path))["Database"]
    assert database.status is Status.FAIL and "can't be read as a database" in database.detail


async def test_a_database_in_use_by_a_running_bot_is_read_without_disturbing_it(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    running = Database(f"sqlite:///{policy_path.parent / 'callbot.db'}")
    await running.open()
    try:
        await running.execute("INSERT INTO claims (key, claimed_at) VALUES ('k', 1)")
        database = by_subject(await check(slack, evo, policy_path))["Database"]
        assert database.status is Status.PASS
        assert await running.fetchone("SELECT key FROM claims") is not None
    finally:
        await running.close()


async def test_the_replicas_alive_are_listed(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, bot_factory: BotFactory
) -> None:
    await migrated_database(policy_path)
    database = by_subject(await check(slack, evo, policy_path))["Database"]
    assert "replicas alive: none" in database.detail
    first, second = await bot_factory("http"), await bot_factory("http")
    database = by_subject(await check(slack, evo, policy_path))["Database"]
    assert database.status is Status.PASS
    for bot in (first, second):
        assert bot.runtime.services is not None
        assert bot.runtime.services.leases.owner in database.detail
    await first.runtime.stop()
    database = by_subject(await check(slack, evo, policy_path))["Database"]
    assert first.runtime.services.leases.owner not in database.detail, "left when it stopped"


async def test_a_check_that_breaks_is_a_line_of_its_own_and_the_others_still_run() -> None:
    async def check_broken(checkup: Checkup) -> list[Finding]:
        raise RuntimeError("a bug in the check")

    async def check_after(checkup: Checkup) -> list[Finding]:
        return passed("After", "ran")

    findings = await run_checkup([check_broken, check_after], _env_file=None)
    assert [(f.status, f.subject) for f in findings] == [
        (Status.FAIL, "broken"), (Status.PASS, "After")
    ]
    text, code = report(findings)
    assert code == 1 and "✗ broken: the check itself failed (RuntimeError)" in text
    assert "a bug in the check" not in text


async def test_callbot_check_exits_0_when_all_pass_and_1_otherwise(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = bot_environment("socket", slack, evo, policy_path)
    code, out, _ = await run_cli(["check"], env, policy_path.parent)
    assert code == 0, out
    assert "✓ Slack bot token: valid" in out and out.rstrip().endswith("All checks passed.")
    assert "✗" not in out

    evo.roles = ["Agent"]
    code, out = await check_from_environment(env, policy_path.parent, monkeypatch)
    assert code == 1
    assert "✗ Evo Voice role:" in out and "    fix: grant that Evo Voice user" in out
    assert "1 problem found" in out
    for secret in ("evo-secret-password", "xoxb-test", "xapp-test"):
        assert secret not in out


def test_readme_troubleshooting_covers_every_check() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    troubleshooting = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    source = "".join(p.read_text() for p in Path(doctor.__file__).parent.glob("check*.py"))
    subjects = set(re.findall(r'subject = "([^"]+)"', source))
    subjects |= {"Settings", "Setting NAME", "Flow alias NAME"}
    assert len(subjects) >= 12
    for subject in sorted(subjects):
        assert f"✗ {subject}" in troubleshooting, f"README has no entry for ✗ {subject}"


async def test_readme_example_shows_every_line_check_prints_in_its_order(
    slack: SlackStandIn, evo: EvoVoiceStandIn, tmp_path: Path
) -> None:
    """README's example of `callbot check` is what the command prints for the policy it shows:
    the same lines (subjects), in the same order, and its closing words."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Checking the set-up: `callbot check`", 1)[1]
    example = section.split("```", 2)[1]
    shown = re.findall(r"^[✓✗–] ([^:]+):", example, re.M)
    policy = tmp_path / "callbot.toml"
    policy.write_text(POLICY.split("[policy]")[0] + textwrap.dedent("""
        [people]
        U0ALICE = "+18144043093"

        [oncall]
        flow = "Escalation"
        rotation = ["U0ALICE", "U0CAROL"]
        ack_outcomes = ["Acknowledged"]
        """))
    evo.flows[:] = [f for f in evo.flows if f["id"] != "flow-page"]  # the example's one ✗
    await migrated_database(policy)
    text, code = report(await check(slack, evo, policy, mode="socket"))
    printed = re.findall(r"^[✓✗–] ([^:]+):", text, re.M)
    assert shown == printed
    assert code == 1 and text.splitlines()[-1] in example


async def test_users_and_groups_slack_does_not_know_are_each_a_problem(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    slack.only_added_users_exist = True
    slack.users.update({"U0MANAGER": {}, "U0ADMIN": {"deleted": True}})
    policy_path.write_text(POLICY.replace('"S0LEADS"', '"S0LEADS", "S0TYPO", "U0GONE"'))

    findings = await check(slack, evo, policy_path)

    problems = {f.detail.split(":")[0]: f for f in failures(findings)}
    assert set(problems) == {"S0TYPO", "U0GONE", "U0ADMIN"}
    assert all(f.subject == "Slack IDs" for f in problems.values())
    assert "no_such_subteam" in problems["S0TYPO"].detail
    assert "user_not_found" in problems["U0GONE"].detail
    assert "[roles] Manager" in problems["U0GONE"].detail
    assert "deactivated" in problems["U0ADMIN"].detail
    assert "Copy member ID" in (problems["U0GONE"].fix or "")
    assert report(findings)[1] == 1


async def test_the_example_files_placeholder_ids_are_refused(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text((Path(__file__).parent.parent / "callbot.example.toml").read_text())
    findings = await check(slack, evo, policy_path)
    [example_ids] = [f for f in failures(findings) if f.subject == "Example IDs"]
    for placeholder in ("U0EXAMPLEMANAGER", "S0EXAMPLELEADS", "U0EXAMPLEADMIN"):
        assert placeholder in example_ids.detail
    assert "callbot init" in (example_ids.fix or "")
    # Not looked up again: the placeholders have their line.
    assert by_subject(findings)["Slack IDs"].status is Status.SKIP


async def test_every_id_in_the_example_file_is_recognised_as_a_placeholder() -> None:
    example = (Path(__file__).parent.parent / "callbot.example.toml").read_text()
    ids = set(re.findall(r"\b[UWS]0[A-Z0-9]{2,20}\b", example))
    assert len(ids) >= 5
    assert all(is_example_id(slack_id) for slack_id in ids)


async def test_checks_waiting_on_a_problem_fold_into_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    findings = await run_checkup(_env_file=None)
    text, code = report(findings)
    assert code == 1
    waiting = [line for line in text.splitlines() if line.startswith("– ")]
    assert len(waiting) == 1 and waiting[0].startswith("– Not checked yet: waiting on the lines")
    assert "Slack bot token" in waiting[0] and "Evo Voice login" in waiting[0]
    assert "Database" not in waiting[0]  # checked: it waits on no other setting


async def test_secrets_can_come_from_files(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = bot_environment("socket", slack, evo, policy_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "EVOVOICE_PASSWORD"):
        secret = tmp_path / name.lower()
        secret.write_text(env.pop(name) + "\n")  # as `echo … > file` or a Kubernetes secret
        env[f"{name}_FILE"] = str(secret)
    code, out = await check_from_environment(env, policy_path.parent, monkeypatch)
    assert code == 0, out

    env["EVOVOICE_PASSWORD"] = "also-set"
    env["SLACK_BOT_TOKEN_FILE"] = str(tmp_path / "missing")
    code, out = await check_from_environment(env, policy_path.parent, monkeypatch)
    assert code == 1
    assert "EVOVOICE_PASSWORD: both EVOVOICE_PASSWORD and EVOVOICE_PASSWORD_FILE are set" in out
    assert "SLACK_BOT_TOKEN: cannot read SLACK_BOT_TOKEN_FILE" in out
    assert "evo-secret-password" not in out and "also-set" not in out


async def test_optional_scopes_missing_pass_with_what_works_less_well(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    assert slack.bot_scopes is not None
    everything = by_subject(await check(slack, evo, policy_path))["Slack scopes"]
    assert everything.status is Status.PASS and "not granted" not in everything.detail
    slack.bot_scopes.remove("channels:history")
    slack.bot_scopes.remove("reactions:write")
    scopes = by_subject(await check(slack, evo, policy_path))["Slack scopes"]
    assert scopes.status is Status.PASS
    assert scopes.detail.endswith(
        "; not granted, so working less well: channels:history (finding a status message lost in"
        " a crash, in public channels (else it is posted again)); reactions:write (the outcome's"
        " reaction on a call's parent message)"
    )


async def test_a_wrong_database_url_is_one_line_not_also_a_database_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    subjects = by_subject(await run_checkup(_env_file=None, database_url="mysql://db/callbot"))
    assert subjects["Setting DATABASE_URL"].status is Status.FAIL
    assert subjects["Database"].status is Status.SKIP
    assert "fix DATABASE_URL first" in subjects["Database"].detail
