"""`callbot init`: the answers it must refuse, and the choices it must write as they were made.

Driven as a person would, through a pseudo-terminal, against the stand-ins (tests/test_init.py has
the plain run and the files it must never touch).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pexpect
import pytest

from bot.ops.check import report, run_checkup
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from tests.conftest import APP_TOKEN, BOT_TOKEN, EVO_PASSWORD, EVO_USER, SIGNING_SECRET
from tests.init_wizard import answer, clean_environment, spawn, spawn_init

# Past the first page of users.list that init asks for (200 people).
CROWD = 210


@pytest.fixture
def crowded(slack: SlackStandIn) -> SlackStandIn:
    """A workspace where @lead is two people, @gone has left and @zed is on users.list's second
    page."""
    slack.only_added_users_exist = True
    assert slack.bot_scopes is not None
    slack.bot_scopes.append("users:read.email")
    slack.users.update({
        "U0LEAD1": {"name": "lead", "real_name": "Lea Lead"},
        "U0LEAD2": {"name": "leadership", "real_name": "Leo Ship",
                    "profile": {"display_name": "lead"}},
        "U0GONE1": {"name": "gone", "real_name": "Gone Away", "deleted": True},
    })
    slack.users.update({f"U0F{i:04d}": {"name": f"filler{i}"} for i in range(CROWD)})
    slack.users["U0ZED1"] = {"name": "zed", "real_name": "Zed Last"}
    return slack


@pytest.mark.usefixtures("no_ambient_settings")  # and in tmp_path, where init writes
async def test_http_mode_the_second_account_and_no_caller_id_are_written_as_chosen(
    crowded: SlackStandIn, evo: EvoVoiceStandIn, tmp_path: Path
) -> None:
    evo.accounts[:] = [("acct-1", "Acme Ops"), ("acct-2", "Beta Ops")]
    for item in [*evo.flows, *evo.phone_numbers]:
        item["accountId"] = "acct-2"  # offered only once the second account is picked
    child = spawn_init(tmp_path, crowded)
    try:
        await answer(child, "Bot User OAuth Token", BOT_TOKEN)
        await answer(child, "App-level token", "xapp-of-another-app")
        await child.expect("✗ Slack refused it", async_=True)
        await answer(child, "App-level token", "")  # HTTP mode after all
        await answer(child, "Signing Secret", SIGNING_SECRET)
        await answer(child, "Evo Voice address", evo.url)
        await answer(child, "Evo Voice username", EVO_USER)
        await answer(child, "Evo Voice password", EVO_PASSWORD)
        await child.expect(r"(\d+)\. Beta Ops \(acct-2\)", async_=True)
        await answer(child, "Which account", child.match.group(1))
        await child.expect(r"(\d+)\. let Evo Voice choose", async_=True)
        await answer(child, "Default caller ID", child.match.group(1))
        await answer(child, "Home region", "XX")
        await child.expect("✗ 'XX' is not a region code", async_=True)
        await answer(child, "Home region", "gb")
        await answer(child, "People who may call", "@lead, ghost@example.com, @gone")
        await child.expect(r"@lead matches several people \(.*U0LEAD1.*U0LEAD2\); use an email",
                           async_=True)
        await child.expect("nobody in Test Team has the email ghost@example.com", async_=True)
        await child.expect("nobody in Test Team is called @gone", async_=True)
        await answer(child, "People who may call", "lead@example.com, @zed")
        await child.expect(r"✓ @zed \(Zed Last\) → U0ZED1", async_=True)
        await answer(child, "on-call rotation", "y")
        await child.expect(r"1\. Escalation", async_=True)
        await answer(child, "Flow for on-call calls", "0")  # no "none" in this list
        await child.expect("Type a number from the list.", async_=True)
        await answer(child, "Flow for on-call calls", "1")
        await answer(child, "The rotation, in order", "@zed")
        await answer(child, "Phone number of @zed", "020 7946 0958")
        await child.expect("Wrote", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before

    env_file = (tmp_path / ".env").read_text()
    assert "SLACK_APP_TOKEN=\n" in env_file
    assert f"SLACK_SIGNING_SECRET={SIGNING_SECRET}\n" in env_file
    assert "EVOVOICE_ACCOUNT_ID=acct-2\n" in env_file
    policy = tomllib.loads((tmp_path / "callbot.toml").read_text())
    assert "default_caller_id" not in policy, "Evo Voice chooses"
    assert policy["default_region"] == "GB" and policy["allowed_regions"] == ["GB"]
    assert policy["roles"] == {"Manager": ["U0LEAD1", "U0ZED1"]}
    assert policy["oncall"]["flow"] == "Escalation"
    assert policy["people"] == {"U0ZED1": "+442079460958"}
    out, code = report(await run_checkup())
    assert code == 0, out


async def test_a_login_that_may_not_call_or_reaches_no_account_is_asked_for_again(
    slack: SlackStandIn, evo: EvoVoiceStandIn, tmp_path: Path
) -> None:
    accounts = list(evo.accounts)
    evo.roles[:] = ["User"]
    child = spawn_init(tmp_path, slack)
    try:
        await answer(child, "Bot User OAuth Token", BOT_TOKEN)
        await answer(child, "App-level token", APP_TOKEN)
        await answer(child, "Evo Voice address", evo.url)
        await answer(child, "Evo Voice username", EVO_USER)
        await answer(child, "Evo Voice password", EVO_PASSWORD)
        await child.expect(r"✗ this login holds neither Manager nor SystemAdministrator \(its "
                           r"roles: User\); grant it Manager", async_=True)
        evo.roles[:] = ["Manager"]
        evo.accounts.clear()
        await answer(child, "Evo Voice username", EVO_USER)
        await answer(child, "Evo Voice password", EVO_PASSWORD)
        await child.expect("✗ this login reaches no account; give it access", async_=True)
        evo.accounts[:] = accounts
        await answer(child, "Evo Voice username", EVO_USER)
        await answer(child, "Evo Voice password", EVO_PASSWORD)
        await child.expect(r"✓ logged in as .* \(Manager\)", async_=True)
        await child.expect("Default caller ID", async_=True)
        child.sendeof()
        await child.expect("nothing was written", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert list(tmp_path.iterdir()) == []


async def test_only_yes_replaces_existing_files(tmp_path: Path) -> None:
    (tmp_path / "callbot.toml").write_text("# mine\n")
    child = spawn(tmp_path, clean_environment())
    try:
        await answer(child, "callbot.toml exist already; replace them", "keep")
        await child.expect("Nothing written; your files are as they were", async_=True)
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert (tmp_path / "callbot.toml").read_text() == "# mine\n"
    assert not (tmp_path / ".env").exists()
