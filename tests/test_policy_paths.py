"""Every way a person asks for a call meets the same limits and questions (end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_policy
from tests.conftest import POLICY, BotFactory, BotUnderTest
from tests.interactions import ask, click, interact, open_form, state, submission

FULL = "+18144043093"


def policy_with(**rules: str) -> str:
    # POLICY ends inside its [policy] section; later keys override nothing, so replace them.
    text = POLICY
    for key, value in rules.items():
        lines = [line for line in text.splitlines() if not line.strip().startswith(f"{key} =")]
        text = "\n".join(lines) + f"\n{key} = {value}\n"
    return text


def responses(bot: BotUnderTest) -> list[dict[str, str]]:
    """Everything posted to response URLs: where the form's refusals and questions go."""
    return [r for posted in bot.slack.responses.values() for r in posted]


def test_repeat_window_is_a_duration(tmp_path: Path) -> None:
    path = tmp_path / "callbot.toml"
    for value, seconds in (('"60s"', 60.0), ('"2m"', 120.0), ('"0s"', 0.0)):
        path.write_text(policy_with(repeat_window=value))
        assert load_policy(path).rules.repeat_window == seconds
    path.write_text(policy_with(repeat_window="60"))
    with pytest.raises(ConfigError) as raised:
        load_policy(path)
    assert "policy.repeat_window: " in raised.value.problems[0]


async def test_the_form_meets_the_rate_limits(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=policy_with(per_user='"1/10m"', repeat_window='"0s"'))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    view = await open_form(bot)
    await interact(bot, submission(view, state(number="+18144043094")))
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    told = [r["text"] for r in responses(bot)]
    assert any("per_user" in t and "nothing was dialled" in t for t in told), told


async def test_the_form_asks_before_calling_a_number_again(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    view = await open_form(bot)
    await interact(bot, submission(view, state()))
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    asked = [r["text"] for r in responses(bot)]
    assert any("call again" in t.lower() for t in asked), asked


async def test_repeat_window_zero_never_asks(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=policy_with(repeat_window='"0s"'))
    await bot.command(f"{FULL} escalation")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


async def test_repeat_window_zero_leaves_the_repeat_out_of_a_region_question(
    bot_factory: BotFactory,
) -> None:
    # The region question asks about a repeat too, within the configured window only.
    bot = await bot_factory("http", policy=policy_with(repeat_window='"0s"'))
    await click(bot, await ask(bot, "+14165550123 escalation"))
    await bot.settle()
    question = await ask(bot, "+14165550123 escalation")
    assert "Canada" in question["text"] and "You called this number" not in question["text"]
    await click(bot, question)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2
