"""`callbot check` on the on-call set-up: the escalation flow, and each person's number."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.ops.check import Status, report
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from tests.checkups import by_subject, check, failures, migrated_database
from tests.escalations import ROSTER

pytestmark = pytest.mark.usefixtures("no_ambient_settings")


async def test_the_oncall_flow_and_everyones_number_get_a_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(ROSTER)
    await migrated_database(policy_path)
    findings = await check(slack, evo, policy_path)
    assert failures(findings) == []
    assert report(findings)[1] == 0
    subjects = by_subject(findings)
    flow = subjects["On-call flow"]
    assert flow.status is Status.PASS
    assert "“Escalation” (flow-esc)" in flow.detail and "90 s to acknowledge" in flow.detail
    ack = subjects["On-call acknowledgement"]
    assert ack.status is Status.PASS and ack.detail.startswith('ack = "acknowledge"')
    assert "no flow outcome counts" in ack.detail
    responders = subjects["On-call responders"]
    assert "every full member" in responders.detail and "3/1h each" in responders.detail
    alice = subjects["On-call number U0ALICE"]
    assert alice.status is Status.PASS
    assert alice.detail == "+1 814 ••• 3093 from [people] (rotation)"
    manager = subjects["On-call number U0MANAGER"]
    assert manager.status is Status.PASS and "(escalate_to)" in manager.detail
    carol = subjects["On-call number U0CAROL"]
    assert carol.status is Status.SKIP and "read from their Slack profile" in carol.detail
    assert "+18144043093" not in report(findings)[0]
    assert {c.method for c in slack.calls} <= {"auth.test", "apps.connections.open", "users.info",
                                               "usergroups.users.list"}


async def test_an_unknown_oncall_flow_fails_once_with_its_fix(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(ROSTER.replace('flow = "Escalation"', 'flow = "Wake Me"'))
    findings = await check(slack, evo, policy_path)
    [problem] = failures(findings)
    assert problem.subject == "On-call flow"
    assert "No flow is called “Wake Me”" in problem.detail
    assert problem.fix is not None and "oncall.flow" in problem.fix
    assert "Start-up check" not in by_subject(findings)  # said once, not twice


async def test_without_oncall_the_check_says_there_is_none(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    oncall = by_subject(await check(slack, evo, policy_path))["On-call"]
    assert oncall.status is Status.SKIP and "no [oncall] section" in oncall.detail


async def test_the_check_says_which_acknowledgement_rule_is_in_force(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    policy_path.write_text(ROSTER + 'ack_outcomes = ["Acknowledged"]\n')
    ack = by_subject(await check(slack, evo, policy_path))["On-call acknowledgement"]
    assert "I'm on it, or the call's outcome “Acknowledged”" in ack.detail
    policy_path.write_text(ROSTER + 'ack = "answer"\n')
    ack = by_subject(await check(slack, evo, policy_path))["On-call acknowledgement"]
    assert ack.detail.startswith('ack = "answer": a step ends when its call connects')


async def test_responders_ids_are_looked_up_too(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    # A mistyped responder group lets none of its members escalate, at the hour they need to:
    # like every other ID of the policy file, check finds it first.
    policy_path.write_text(ROSTER + 'responders = ["S0LEADS", "S0NOSUCH"]\n')
    findings = await check(slack, evo, policy_path)
    [problem] = failures(findings)
    assert problem.subject == "Slack IDs"
    assert problem.detail.startswith("S0NOSUCH: no user group of this workspace has this ID")
    assert "(listed in oncall.responders)" in problem.detail
    policy_path.write_text(ROSTER + 'responders = ["U0EXAMPLEDEV"]\n')
    examples = by_subject(await check(slack, evo, policy_path))["Example IDs"]
    assert examples.status is Status.FAIL and "U0EXAMPLEDEV (oncall.responders)" in examples.detail


async def test_responder_groups_need_the_usergroups_scope(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    assert slack.bot_scopes is not None
    slack.bot_scopes.remove("usergroups:read")
    policy_path.write_text(ROSTER.replace(', "S0LEADS"', "") + 'responders = ["S0LEADS"]\n')
    scopes = by_subject(await check(slack, evo, policy_path))["Slack scopes"]
    assert scopes.status is Status.FAIL, scopes
    assert "usergroups:read (" in scopes.detail and "S0LEADS" in scopes.detail
