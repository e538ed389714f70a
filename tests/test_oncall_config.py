"""The roster in the policy file: [people] and [oncall], each problem named on its own line."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from bot.config import ConfigError, Policy, load_policy
from tests.conftest import POLICY, BotFactory

ROLES = '[roles]\nManager = ["U0MANAGER"]\n'

ISSUE_EXAMPLE = ROLES + textwrap.dedent(
    """
    [people]
    U0ALICE = "+18144043093"
    U0BOB = "+18144043094"

    [oncall]
    flow = "Escalation"
    rotation = ["U0ALICE", "U0BOB"]
    handoff = "monday 09:00"
    timezone = "America/New_York"
    start = 2026-01-05
    answer_timeout = 90
    escalate_to = ["U0MANAGER"]
    """
)


def load(text: str, tmp_path: Path) -> Policy:
    path = tmp_path / "callbot.toml"
    path.write_text(text)
    return load_policy(path)


def problems_of(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load(text, tmp_path)
    return [p.split(": ", 1)[1] for p in raised.value.problems]  # without the file name


def test_the_issues_example_loads(tmp_path: Path) -> None:
    policy = load(ISSUE_EXAMPLE, tmp_path)
    assert policy.people == {"U0ALICE": "+18144043093", "U0BOB": "+18144043094"}
    assert policy.oncall is not None
    assert policy.oncall.rotation == ("U0ALICE", "U0BOB")
    assert policy.oncall.zone.key == "America/New_York"
    assert policy.oncall.escalate_to == ("U0MANAGER",)


def test_only_flow_and_rotation_are_required(tmp_path: Path) -> None:
    policy = load(ROLES + '[oncall]\nflow = "page"\nrotation = ["U0ALICE"]\n', tmp_path)
    oncall = policy.oncall
    assert oncall is not None
    assert oncall.handoff == "monday 09:00"
    assert oncall.timezone == "UTC"
    assert oncall.start == dt.date(2026, 1, 5)
    assert oncall.start.weekday() == 0
    assert oncall.answer_timeout == 90
    assert oncall.escalate_to == ()
    assert policy.people == {}


def test_without_oncall_section_there_is_no_rotation(tmp_path: Path) -> None:
    policy = load(ROLES + '[people]\nU0ALICE = "+18144043093"\n', tmp_path)
    assert policy.oncall is None


def test_people_numbers_become_e164_and_hand_off_rules_are_normalised(tmp_path: Path) -> None:
    policy = load(
        ROLES + '[people]\nU0ALICE = "(814) 404-3093"\nW0BOB = "+1 814 404 3094"\n'
        '[oncall]\nflow = "page"\nrotation = ["U0ALICE"]\nhandoff = "Fri 7:30"\n',
        tmp_path,
    )
    assert policy.people == {"U0ALICE": "+18144043093", "W0BOB": "+18144043094"}
    assert policy.oncall is not None and policy.oncall.handoff == "friday 07:30"


def test_each_bad_person_is_one_line_naming_the_entry(tmp_path: Path) -> None:
    problems = problems_of(
        ROLES
        + textwrap.dedent(
            """
            [people]
            U0ALICE = "+18144043093"
            alice = "+18144043094"
            U0BOB = "+1 809 555 1234"
            U0CAROL = "+1 900 555 0123"
            U0DAVE = "call me"
            U0ERIN = "+18144043093x12"
            S0GROUP = "+18144043095"
            """
        ),
        tmp_path,
    )
    by_entry = {p.split(":", 1)[0]: p for p in problems}
    assert len(problems) == len(by_entry) == 6
    assert "not a Slack user ID" in by_entry["people.alice"]
    assert "not a Slack user ID" in by_entry["people.S0GROUP"]
    assert "Dominican Republic" in by_entry["people.U0BOB"]
    assert "premium-rate" in by_entry["people.U0CAROL"]
    assert "letters" in by_entry["people.U0DAVE"]
    assert "xtension" in by_entry["people.U0ERIN"]
    assert "555 1234" not in "\n".join(problems)  # numbers are masked, never echoed


async def test_people_numbers_follow_the_dialling_rules_of_the_policy(
    bot_factory: BotFactory,
) -> None:
    # The escalation dials [people] under [policy]'s types and blocked prefixes: a number they
    # refuse, passed at start-up (and by `callbot check`), was the person skipped mid-incident.
    roster = '[people]\nU0ALICE = "+18144043093"\n[oncall]\nflow = "page"\nrotation = ["U0ALICE"]\n'
    blocked = POLICY + 'blocked_prefixes = ["+1814404"]\n' + roster
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http", policy=blocked)
    [problem] = raised.value.problems
    assert "people.U0ALICE: " in problem and "a number range this bot may not call" in problem
    # And the other way round: a number [policy] lets /call dial is a person's number too.
    toll_free = POLICY + 'allowed_types = ["FIXED_LINE_OR_MOBILE", "TOLL_FREE"]\n' + roster
    bot = await bot_factory("http", policy=toll_free.replace("+18144043093", "+18002752273"))
    assert bot.runtime.ready


def test_people_numbers_follow_the_regions_of_the_policy(tmp_path: Path) -> None:
    text = '[people]\nU0ANNE = "+44 20 7946 0018"\n'
    [problem] = problems_of(ROLES + text, tmp_path)
    assert problem.startswith("people.U0ANNE: ") and "United Kingdom" in problem
    policy = load('allowed_regions = ["US", "GB"]\n' + ROLES + text, tmp_path)
    assert policy.people["U0ANNE"] == "+442079460018"


def test_oncall_needs_flow_and_rotation(tmp_path: Path) -> None:
    problems = problems_of(ROLES + "[oncall]\nhandoff = \"daily 08:00\"\n", tmp_path)
    assert sorted(problems) == ["oncall.flow: is required", "oncall.rotation: is required"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('flow = " "', "oncall.flow: is empty"),
        ("rotation = []", "oncall.rotation: is empty"),
        ('rotation = ["U0ALICE", "bob"]', "oncall.rotation: 'bob' are not Slack user IDs"),
        (
            'rotation = ["U0ALICE", "U0BOB", "U0ALICE"]',
            "oncall.rotation: lists U0ALICE more than once",
        ),
        (
            'handoff = "mon 9am"',
            "oncall.handoff: 'mon 9am' is not a hand-off rule: write \"<weekday> HH:MM\"",
        ),
        ('handoff = "caturday 09:00"', "oncall.handoff: 'caturday' is not a day of the week"),
        ('handoff = "daily 25:00"', "oncall.handoff: 'daily 25:00' has no such time of day"),
        ('timezone = "Mars/Olympus"', "oncall.timezone: 'Mars/Olympus' is not an IANA time zone"),
        ('timezone = "../../etc/passwd"', "oncall.timezone: '../../etc/passwd' is not an IANA"),
        # A region alone names a folder of the time zone database, not a zone; a name too long
        # for a file name: each is a problem line, not a traceback.
        ('timezone = "America"', "oncall.timezone: 'America' is not an IANA time zone"),
        (f'timezone = "{"x" * 300}"', "oncall.timezone: 'xxx"),
        ("start = 2026-01-05T09:00:00", "oncall.start: must be a date like 2026-01-05"),
        ('start = "next week"', "oncall.start:"),
        (
            "answer_timeout = 5",
            "oncall.answer_timeout: Input should be greater than or equal to 15",
        ),
        (
            "answer_timeout = 3600",
            "oncall.answer_timeout: Input should be less than or equal to 600",
        ),
        ('escalate_to = ["S0LEADS"]', "oncall.escalate_to: 'S0LEADS' are not Slack user IDs"),
        ('escalate_to = ["U0M", "U0M"]', "oncall.escalate_to: lists U0M more than once"),
        ('responders = ["S0ONCALL", "bob"]',
         "oncall.responders: 'bob' are not Slack user IDs (U…/W…) or user group IDs (S…)"),
        ('responders = "U0DEV, U0SRE"', "oncall.responders: 'U0DEV, U0SRE' are not Slack user"),
        ("escalations_per_person = 3",
         'oncall.escalations_per_person: must be a string like "3/1h"'),
        ("surprise = 1", "oncall.surprise: is not a known setting"),
    ],
)
def test_each_oncall_problem_is_named(tmp_path: Path, line: str, expected: str) -> None:
    lines = {"flow": 'flow = "page"', "rotation": 'rotation = ["U0ALICE", "U0BOB"]'}
    key = line.split(" ", 1)[0]
    lines[key] = line
    [problem] = problems_of(ROLES + "[oncall]\n" + "\n".join(lines.values()) + "\n", tmp_path)
    assert problem.startswith(expected), problem


def test_the_example_policy_files_roster_is_valid_once_uncommented(tmp_path: Path) -> None:
    example = (Path(__file__).parent.parent / "callbot.example.toml").read_text()
    head, roster = example.split("# [people]", 1)
    assert "[oncall]" in roster
    uncommented = "[people]" + "\n".join(line.removeprefix("# ") for line in roster.splitlines())
    policy = load(head + uncommented, tmp_path)
    assert policy.oncall is not None and policy.people
    assert policy.oncall.schedule().shift_at(dt.datetime(2026, 1, 5, 14, tzinfo=dt.UTC))


async def test_startup_checks_the_oncall_flow_exists(bot_factory: BotFactory) -> None:
    policy = POLICY + '\n[oncall]\nflow = "no-such-flow"\nrotation = ["U0MANAGER"]\n'
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http", policy=policy)
    [problem] = raised.value.problems
    assert problem.startswith("On-call flow: 'no-such-flow': No flow is called “no-such-flow”")
    assert "set oncall.flow in the policy file" in problem
    assert "Escalation" in problem


@pytest.mark.parametrize("start", ["9999-12-27", "9999-12-31"])
async def test_a_start_too_far_ahead_to_count_shifts_is_named(
    bot_factory: BotFactory, start: str
) -> None:
    # A rotation starting in the last days of year 9999 has no next hand-off a date can hold: it
    # stopped start-up as an unexpected failure, or failed every /call oncall and escalation.
    policy = POLICY + f'\n[oncall]\nflow = "page"\nrotation = ["U0MANAGER"]\nstart = {start}\n'
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http", policy=policy)
    [problem] = raised.value.problems
    assert "oncall.start: " in problem and "too far ahead" in problem, problem


async def test_a_start_too_far_back_for_its_zone_is_named(bot_factory: BotFactory) -> None:
    # In a zone ahead of UTC, a hand-off in the first days of year 1 falls before the first
    # instant a datetime holds: the file was accepted, and then every /call oncall, Home tab and
    # escalation failed with an unexpected error (OverflowError).
    policy = POLICY + ('\n[oncall]\nflow = "page"\nrotation = ["U0MANAGER"]\nstart = 0001-01-01\n'
                       'timezone = "Asia/Tokyo"\nhandoff = "daily 00:30"\n')
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http", policy=policy)
    [problem] = raised.value.problems
    assert "oncall.start: " in problem and "too far back" in problem, problem


async def test_startup_accepts_an_oncall_flow_by_alias(bot_factory: BotFactory) -> None:
    policy = POLICY + '\n[oncall]\nflow = "page"\nrotation = ["U0MANAGER"]\n'
    bot = await bot_factory("http", policy=policy)
    assert bot.runtime.ready


def test_acknowledgement_is_required_by_default(tmp_path: Path) -> None:
    oncall = load(ISSUE_EXAMPLE, tmp_path).oncall
    assert oncall is not None
    assert oncall.ack == "acknowledge" and oncall.acknowledges and oncall.ack_outcomes == ()
    assert not oncall.is_ack_outcome("Acknowledged")


def test_ack_modes_and_outcomes(tmp_path: Path) -> None:
    oncall = load(ISSUE_EXAMPLE + 'ack = "Answer"\nack_outcomes = ["Acknowledged", "Pressed 1"]\n',
                  tmp_path).oncall
    assert oncall is not None and oncall.ack == "answer" and not oncall.acknowledges
    assert oncall.is_ack_outcome(" acknowledged ") and oncall.is_ack_outcome("PRESSED 1")
    assert not oncall.is_ack_outcome("Completed") and not oncall.is_ack_outcome(None)


def test_a_bad_ack_setting_says_what_is_allowed(tmp_path: Path) -> None:
    [ack] = problems_of(ISSUE_EXAMPLE + 'ack = "ring"\n', tmp_path)
    assert ack.startswith("oncall.ack: must be \"acknowledge\"") and "\"answer\"" in ack
    [outcomes] = problems_of(ISSUE_EXAMPLE + 'ack_outcomes = ["ok", " "]\n', tmp_path)
    assert outcomes.startswith("oncall.ack_outcomes: lists an empty outcome")


def test_responders_everyone_is_read_whatever_its_case(tmp_path: Path) -> None:
    for written in ('"everyone"', '"Everyone"', '" EVERYONE "'):
        oncall = load(ISSUE_EXAMPLE + f"responders = {written}\n", tmp_path).oncall
        assert oncall is not None and oncall.responders == "everyone", written
    oncall = load(ISSUE_EXAMPLE + 'responders = "U0DEV"\n', tmp_path).oncall
    assert oncall is not None and oncall.responders == ("U0DEV",)
