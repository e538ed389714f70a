"""`EVENT_LOOP`: the bot runs on uvloop unless told `asyncio`, and places calls on either; a
machine without uvloop (Windows) runs on asyncio's loop and says so; a value that is neither is a
configuration error like any other."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.ops.event_loop import loop_factory, run, running_loop_name
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from tests.conftest import bot_environment
from tests.entry import run_main
from tests.process_calls import place_a_call
from tests.processes import BotProcess

FULL = "+18144043093"


@pytest.mark.parametrize(("setting", "loop"), [
    (None, "uvloop"), ("asyncio", "asyncio"), (" UVLOOP ", "uvloop"),
])
async def test_the_bot_places_a_call_on_the_loop_event_loop_names(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, setting: str | None, loop: str
) -> None:
    env = bot_environment("http", slack, evo, policy_path)
    if setting is not None:
        env["EVENT_LOOP"] = setting
    bot = await BotProcess.start(env, policy_path.parent)
    try:
        [said] = await bot.wait_for_line(r"callbot ready \(HTTP mode, port \d+, event loop (\w+)\)")
        assert said == loop
        await place_a_call(bot, slack, evo, "http", FULL)
    finally:
        code = await bot.stop(signal.SIGTERM)
    assert code == 0, bot.output()


def test_without_uvloop_the_bot_runs_on_asyncios_loop_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` finds on Windows

    async def name() -> str:
        return running_loop_name()

    with caplog.at_level(logging.WARNING, "bot.ops.event_loop"):
        assert loop_factory("uvloop") is None
        assert run(name(), "uvloop") == "asyncio"
    assert [r.getMessage() for r in caplog.records] == [
        "EVENT_LOOP=uvloop, but uvloop is not installed (it has no Windows build): running on "
        "asyncio's own loop. Set EVENT_LOOP=asyncio to say so.",
    ] * 2


def test_run_makes_the_loop_it_is_asked_for() -> None:
    async def name() -> str:
        return running_loop_name()

    assert run(name(), "uvloop") == "uvloop"
    assert run(name(), "asyncio") == "asyncio"


async def test_the_tests_run_on_the_loop_the_bot_runs_on() -> None:
    # tests/conftest.py: uvloop, EVENT_LOOP's default, unless CALLBOT_TEST_EVENT_LOOP=asyncio.
    asked = os.environ.get("CALLBOT_TEST_EVENT_LOOP")
    assert running_loop_name() == ("asyncio" if asked == "asyncio" else "uvloop")


def test_an_event_loop_that_is_neither_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["run"], {"EVENT_LOOP": "trio"}, tmp_path, monkeypatch, capsys)
    assert code == 2 and out == ""
    assert any("EVENT_LOOP" in line and "uvloop" in line and "asyncio" in line
               for line in err.splitlines() if line.startswith("  ✗ ")), err
