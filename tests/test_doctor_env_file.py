"""`callbot check` points out a `${NAME}` in `.env` that python-dotenv replaced with nothing (a
password holding `${`), without showing any of the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from tests.checkups import check_from_environment
from tests.conftest import EVO_PASSWORD, bot_environment

pytestmark = pytest.mark.usefixtures("no_ambient_settings")


async def check_with_password_in_dot_env(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch, line: str,
) -> tuple[int, str]:
    env = bot_environment("http", slack, evo, policy_path)
    env.pop("EVOVOICE_PASSWORD")  # from .env alone: the environment would take precedence
    (policy_path.parent / ".env").write_text(line + "\n")
    return await check_from_environment(env, policy_path.parent, monkeypatch)


@pytest.mark.parametrize("quote", ["", "'", '"'])
async def test_a_password_holding_a_reference_to_nothing_is_pointed_out(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch, quote: str,
) -> None:
    code, out = await check_with_password_in_dot_env(
        slack, evo, policy_path, monkeypatch, f"EVOVOICE_PASSWORD={quote}pW9${{Q7ZZ}}xK4{quote}")
    assert code == 1
    assert "✗ Setting EVOVOICE_PASSWORD: " in out and "naming a variable set nowhere" in out, out
    assert "EVOVOICE_PASSWORD_FILE" in out
    assert not any(piece in out for piece in ("pW9", "Q7ZZ", "xK4")), "no piece of the value"


async def test_a_reference_to_a_variable_that_is_set_is_no_problem(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLBOT_TEST_EVO_SECRET", EVO_PASSWORD)
    code, out = await check_with_password_in_dot_env(
        slack, evo, policy_path, monkeypatch, "EVOVOICE_PASSWORD=${CALLBOT_TEST_EVO_SECRET}")
    assert code == 0, out
    assert "naming a variable set nowhere" not in out


async def test_a_reference_to_a_line_further_down_is_pointed_out(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # python-dotenv expands from the environment and the lines above: one set further down is
    # not set yet, and the password was read with nothing in its place.
    code, out = await check_with_password_in_dot_env(
        slack, evo, policy_path, monkeypatch, "EVOVOICE_PASSWORD=pW9${Q7ZZ}xK4\nQ7ZZ=later")
    assert code == 1, out
    assert "✗ Setting EVOVOICE_PASSWORD: " in out and "naming a variable set nowhere" in out, out
