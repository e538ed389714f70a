"""`EVOVOICE_MODE=simulate`: real Slack (here its stand-in), calls to a simulated Evo Voice."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.evovoice.simulator import BANNER, RING_SECONDS
from bot.ops.check import Status, run_checkup
from bot.standins.evovoice import EvoVoiceStandIn
from tests.conftest import POLICY, BotFactory, bot_environment, until
from tests.escalations import open_on_message, page_of, start, submit
from tests.follow_helpers import FAST

SIMULATE = {"EVOVOICE_MODE": "simulate", "EVOVOICE_USERNAME": "", "EVOVOICE_PASSWORD": "",
            "EVOVOICE_URL": "https://evo.invalid"}


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_calls_are_simulated_and_every_message_says_so(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, mode: str
) -> None:
    bot = await bot_factory(mode, **SIMULATE, **FAST)  # the rung-out call is seen at the next poll
    simulator = bot.runtime.simulator
    assert simulator is not None

    await bot.command("+1 814 404 3093 escalation")
    [post] = await simulator.standin.wait_for_posts(1)
    await bot.settle()
    assert post.json["numberToDial"] == "+18144043093"
    assert evo.requests == [], "nothing reaches a real Evo Voice"
    [parent] = bot.slack.channel_messages("C0OPS")
    [status] = bot.slack.thread("C0OPS", parent.ts)
    for message in (parent, status):
        assert BANNER in str(message.text)
        assert BANNER in str(message.blocks)

    # Nobody answers a simulated call: it rings out and the status says so.
    created = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=RING_SECONDS + 1)
    simulator.end_calls_rung_out(created)
    for _ in range(200):
        if "Ended" in str(bot.slack.thread("C0OPS", parent.ts)[0].text):
            break
        await asyncio.sleep(0.05)
    [status] = bot.slack.thread("C0OPS", parent.ts)
    assert "Ended" in str(status.text) and "No answer (simulated)" in str(status.text)
    assert BANNER in str(status.text)


async def test_an_on_call_page_says_the_call_is_simulated_from_its_first_version(
    bot_factory: BotFactory,
) -> None:
    # A simulated bot in a real workspace pages real people: the page tells them no phone rings
    # as it arrives, as every message posted in a channel does, not only once it is edited.
    bot, _ = await start(bot_factory, **SIMULATE)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    page = await page_of(bot, "U0ALICE")
    first = page.versions[0]
    assert BANNER in str(first["text"]) and BANNER in str(first["blocks"])


async def test_the_policy_files_flows_and_caller_id_exist_in_the_simulated_account(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    bot = await bot_factory("http", **SIMULATE)  # POLICY: alias page -> flow-page, +18145550100
    # Whoever reads the start-up log learns that no phone will ring.
    assert any(r.levelno == logging.WARNING and "no phone will ring" in r.getMessage()
               for r in caplog.records)
    await bot.command("+1 814 404 3093 page")
    assert bot.runtime.simulator is not None
    [post] = await bot.runtime.simulator.standin.wait_for_posts(1)
    assert post.json["flowId"] == "flow-page"
    assert post.json.get("callerId") in (None, "+18145550100")


async def test_a_test_call_rings_with_the_policys_own_oncall_flow(bot_factory: BotFactory) -> None:
    # An on-call flow the real account has and the simulated one would lack unless seeded.
    policy = POLICY + """
[people]
U0MANAGER = "+18144043090"

[oncall]
flow = "Night Paging"
rotation = ["U0MANAGER"]
"""
    bot = await bot_factory("http", policy=policy, **SIMULATE)
    await bot.command("test")
    assert bot.runtime.simulator is not None
    [post] = await bot.runtime.simulator.standin.wait_for_posts(1)
    assert post.json["numberToDial"] == "+18144043090"
    assert post.json["flowId"] == "sim-night-paging"


async def test_the_policys_own_caller_id_is_the_simulated_accounts_line(
    bot_factory: BotFactory,
) -> None:
    own_line = "+18145550177"  # not the simulator's stock line
    bot = await bot_factory("http", policy=POLICY.replace("+18145550100", own_line), **SIMULATE)
    await bot.command("+1 814 404 3093 escalation")
    assert bot.runtime.simulator is not None
    [post] = await bot.runtime.simulator.standin.wait_for_posts(1)
    assert post.json.get("callerId") in (None, own_line)
    assert [n["phoneNumber"] for n in bot.runtime.simulator.standin.phone_numbers] == [own_line]


def test_a_live_bot_needs_the_evovoice_login_a_simulated_one_does_not() -> None:
    base = {"_env_file": None, "slack_bot_token": "xoxb-x", "slack_app_token": "xapp-x"}
    with pytest.raises(ConfigError) as refused:
        load_settings(**base)
    assert "EVOVOICE_USERNAME: is required but not set" in refused.value.problems
    assert "EVOVOICE_PASSWORD: is required but not set" in refused.value.problems
    assert load_settings(**base, evovoice_mode="Simulate").evovoice_mode == "simulate"


async def test_callbot_check_says_the_evovoice_login_is_not_used(
    slack: object, evo: EvoVoiceStandIn, policy_path: object,
) -> None:
    env = bot_environment("http", slack, evo, policy_path)  # type: ignore[arg-type]
    env.update(SIMULATE)
    findings = await run_checkup(_env_file=None, **{k.lower(): v for k, v in env.items()})
    login = [f for f in findings if f.subject == "Evo Voice login"][0]
    assert login.status is Status.SKIP and "EVOVOICE_MODE=simulate" in login.detail
    assert evo.requests == []


@pytest.mark.parametrize("text", ["help", "hello there", "test +18144043093", "oncall nonsense"])
async def test_an_answer_in_the_commands_ack_says_the_calls_are_simulated(
    bot_factory: BotFactory, text: str
) -> None:
    # The help, and a refusal answered at once, are messages the bot shows too.
    bot = await bot_factory("http", **SIMULATE)
    ack, _ = await bot.command(text)
    assert ack.body.get("text"), ack.body
    assert BANNER in str(ack.body["text"]) and BANNER in str(ack.body.get("blocks"))


async def test_a_restarted_simulated_bot_follows_its_own_new_calls(
    bot_factory: BotFactory,
) -> None:
    # The database outlives the process, the simulated account does not: a rehearsal resumed
    # after a restart must not meet the session ids of the calls placed before it.
    first = await bot_factory("http", **SIMULATE, **FAST)
    await first.command("+1 814 404 3093 escalation")
    assert first.runtime.simulator is not None
    await first.runtime.simulator.standin.wait_for_posts(1)
    await first.settle()
    await first.runtime.stop()
    second = await bot_factory("http", **SIMULATE, **FAST)  # the same database
    simulator = second.runtime.simulator
    assert simulator is not None
    await second.command("+1 814 404 3094 escalation")
    await simulator.standin.wait_for_posts(1)
    [session_id] = simulator.standin.sessions
    # Posted alongside the dial, maybe after it.
    await until(lambda: len(second.slack.channel_messages("C0OPS")) == 2)
    [old, new] = second.slack.channel_messages("C0OPS")
    for _ in range(100):
        await second.settle()
        if f"session `{session_id}`" in str(second.slack.thread("C0OPS", new.ts)[0].text):
            break
        await asyncio.sleep(0.05)
    assert f"session `{session_id}`" in str(second.slack.thread("C0OPS", new.ts)[0].text)
    assert f"session `{session_id}`" not in str(second.slack.thread("C0OPS", old.ts)[0].text)


def test_a_simulated_bot_starts_with_the_evovoice_lines_of_env_example_untouched() -> None:
    # README: the login is not needed to rehearse; .env.example ships EVOVOICE_PASSWORD=change-me.
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    assert "EVOVOICE_PASSWORD=change-me" in example
    base = {"_env_file": None, "slack_bot_token": "xoxb-x", "slack_app_token": "xapp-x",
            "evovoice_username": "callbot@example.com", "evovoice_password": "change-me"}
    assert load_settings(**base, evovoice_mode="simulate").evovoice_mode == "simulate"
    with pytest.raises(ConfigError) as refused:
        load_settings(**base)  # live: the placeholder is still refused
    assert any(p.startswith("EVOVOICE_PASSWORD: still holds the placeholder")
               for p in refused.value.problems)


async def test_callbot_check_passes_a_rehearsal_without_a_default_caller_id(
    slack: object, evo: EvoVoiceStandIn, policy_path: Path,
) -> None:
    # callbot.example.toml leaves default_caller_id out: a rehearsal's set-up must pass, rather
    # than fail with "the check itself failed … report this to the callbot maintainers".
    policy_path.write_text(POLICY.replace('default_caller_id = "+18145550100"\n', ""))
    env = bot_environment("http", slack, evo, policy_path)  # type: ignore[arg-type]
    env.update(SIMULATE)
    findings = await run_checkup(_env_file=None, **{k.lower(): v for k, v in env.items()})
    assert [f for f in findings if f.status is Status.FAIL] == []
    [caller_id] = [f for f in findings if f.subject == "Default caller ID"]
    assert caller_id.status is Status.SKIP and "not set" in caller_id.detail
