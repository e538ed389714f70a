"""The policy file's `[policy]` section: validated with clear messages, safe defaults, wired in."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.config import ConfigError, load_policy
from bot.phone import NumberRejected, RejectCode, check_dialable
from tests.conftest import BotFactory, policy_with

BASE = '[roles]\nManager = ["U0MANAGER"]\n'


def policy_from(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "callbot.toml"
    path.write_text(textwrap.dedent(text))
    return load_policy(path)


def problems_of(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        policy_from(text, tmp_path)
    return raised.value.problems


def test_defaults_without_a_policy_section(tmp_path: Path) -> None:
    policy = policy_from(BASE, tmp_path)
    rules = policy.rules
    assert set(rules.allowed_types) == {"FIXED_LINE", "MOBILE", "FIXED_LINE_OR_MOBILE"}
    assert rules.blocked_prefixes == ("+1900", "+1976")
    assert (rules.per_user.count, rules.per_user.seconds) == (5, 600)
    assert (rules.per_number.count, rules.per_number.seconds) == (3, 600)
    assert rules.per_day == 200
    # Left out, confirm_outside is the default region: the other allowed regions ask first.
    assert policy.confirm_outside == frozenset({"US"})


def test_the_issue_example_is_accepted(tmp_path: Path) -> None:
    policy = policy_from(
        BASE + """
        [policy]
        allowed_types = ["FIXED_LINE", "MOBILE", "FIXED_LINE_OR_MOBILE", "TOLL_FREE"]
        blocked_prefixes = ["+1900", "+1976"]
        confirm_outside = ["us"]
        per_user = "5/10m"
        per_number = "3/10m"
        per_day = 200
        """,
        tmp_path,
    )
    assert "TOLL_FREE" in policy.dial_policy.allowed_types
    assert policy.confirm_outside == frozenset({"US"})


def test_each_problem_is_named(tmp_path: Path) -> None:
    problems = problems_of(
        BASE + """
        [policy]
        allowed_types = ["MOBILE", "LANDLINE"]
        blocked_prefixes = ["1900", "+1 976"]
        confirm_outside = ["UK"]
        per_user = "5 per 10 minutes"
        per_number = "0/10m"
        per_day = "lots"
        max_cost = 3
        """,
        tmp_path,
    )
    text = "\n".join(problems)
    assert "policy.allowed_types: unknown number types: LANDLINE" in text
    assert "policy.blocked_prefixes: not E.164 prefixes: '1900', '+1 976'" in text
    assert "policy.confirm_outside: not region codes: UK" in text
    assert (
        "policy.per_user: '5 per 10 minutes' is not a rate; write calls/window like \"5/10m\""
        in text
    )
    assert "policy.per_number: '0/10m' allows no calls at all" in text
    assert "policy.per_day:" in text
    assert "policy.max_cost: is not a known setting" in text
    assert len(problems) == 7
    assert all(str(tmp_path) in p for p in problems)


@pytest.mark.parametrize("value", ["0", "-5", "true", "2.5"])
def test_per_day_must_be_a_positive_whole_number(tmp_path: Path, value: str) -> None:
    [problem] = problems_of(BASE + f"[policy]\nper_day = {value}\n", tmp_path)
    assert problem.startswith(f"{tmp_path / 'callbot.toml'}: policy.per_day:")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Written as a rate should be, only too large: the line says which part and how far,
        # not "is not a rate; write calls/window like "5/10m"", which it already is.
        ('per_user = "5000000/1h"', "policy.per_user: '5000000/1h' allows too many calls; "
                                    "the count may be at most 1000000"),
        ('per_number = "3/9999999m"', "policy.per_number: '3/9999999m': the window may be at "
                                      "most 7 days"),
        ('per_user = "5/99999999999999999999999999h"', "policy.per_user: "
                                                       "'5/99999999999999999999999999h': the "
                                                       "window may be at most 7 days"),
        ('repeat_window = "99999999d"', "policy.repeat_window: '99999999d': at most 7 days"),
        ('per_day = 1000001', "policy.per_day: Input should be less than or equal to 1000000"),
    ],
)
def test_a_number_too_large_says_so(tmp_path: Path, line: str, expected: str) -> None:
    [problem] = problems_of(BASE + f"[policy]\n{line}\n", tmp_path)
    assert problem == f"{tmp_path / 'callbot.toml'}: {expected}", problem


def test_empty_allowed_types_would_refuse_everything(tmp_path: Path) -> None:
    [problem] = problems_of(BASE + "[policy]\nallowed_types = []\n", tmp_path)
    assert "no call could be placed" in problem


def test_blocked_prefixes_and_types_reach_the_dialling_policy(tmp_path: Path) -> None:
    policy = policy_from(
        BASE + '[policy]\nblocked_prefixes = ["+1814404"]\nallowed_types = ["MOBILE", '
        '"FIXED_LINE", "FIXED_LINE_OR_MOBILE", "TOLL_FREE"]\n',
        tmp_path,
    )
    with pytest.raises(NumberRejected) as refused:
        check_dialable("+18144043093", policy.dial_policy)
    assert refused.value.code == RejectCode.BLOCKED_PREFIX
    assert check_dialable("+18005550199", policy.dial_policy).type == "TOLL_FREE"
    default = policy_from(BASE, tmp_path)
    with pytest.raises(NumberRejected) as refused:
        check_dialable("+18005550199", default.dial_policy)
    assert refused.value.code == RejectCode.TYPE_NOT_ALLOWED


def test_example_policy_file_documents_the_section() -> None:
    example = Path(__file__).parent.parent / "callbot.example.toml"
    assert "[policy]" in example.read_text()
    policy = load_policy(example)
    assert policy.rules.per_user.text == "5/10m"


async def test_a_blocked_prefix_is_refused_end_to_end(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=policy_with(blocked_prefixes=["+1814404"]))
    _, url = await bot.command("+18144043093 escalation")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "range this bot may not call" in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_landlines_and_mobiles_allowed_take_us_numbers(
    bot_factory: BotFactory,
) -> None:
    """phonenumbers can't tell a US or Canadian landline from a mobile: every such number is
    "landline or mobile", which is one of the two. `allowed_types = ["FIXED_LINE", "MOBILE"]`
    allows both, so it dials them; a refusal never says a number is of a type it allows."""
    bot = await bot_factory("http", policy=policy_with(allowed_types=["FIXED_LINE", "MOBILE"]))
    await bot.command("+18144043093 escalation")
    [post] = await bot.evo.wait_for_posts(1)
    assert post.json["numberToDial"] == "+18144043093"
    mobiles = await bot_factory("http", policy=policy_with(allowed_types=["MOBILE"]))
    _, url = await mobiles.command("+18144043093 escalation")
    [answer] = await mobiles.slack.wait_for_response(url)
    await mobiles.settle()
    assert "is a landline or mobile number; only mobile numbers can be called" in answer["text"]
    assert mobiles.evo.outgoing_posts == [post]  # the stand-in both bots dial: the first's only
