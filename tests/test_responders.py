"""Who may escalate to on-call and see the rotation, end to end: by default every full member of the
workspace (a responder without a role escalates, and the chain dials for them), never guests or
people from other organisations; `[oncall] responders` narrows it; a responder without a role has
a limit of their own. Dialling arbitrary numbers stays with the roles.
"""

from __future__ import annotations

import json

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.oncall.escalation_form import EscalationField
from tests.conftest import BotFactory, BotUnderTest
from tests.follow_helpers import services
from tests.escalations import (
    ALICE,
    ROSTER,
    click_ack,
    dialled,
    escalation_message,
    metrics_text,
    open_on_message,
    page_of,
    start,
    submit,
    wait_for_edit,
    wait_for_state,
)

DEVELOPER = "U0DEV"  # a full member of the workspace, no role, not in the rotation


async def oncall_answer(bot: BotUnderTest, user_id: str) -> str:
    _, url = await bot.command("oncall", user_id=user_id)
    [answer] = await bot.slack.wait_for_response(url)
    return json.dumps(answer, ensure_ascii=False)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_responder_without_a_role_escalates_and_sees_the_rotation(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode)
    assert "On call now:* <@U0ALICE>" in await oncall_answer(bot, DEVELOPER)
    view, _ = await open_on_message(bot, user_id=DEVELOPER)
    assert await submit(bot, view, user_id=DEVELOPER) == {}
    escalation = await escalation_message(bot)
    assert f"*On-call escalation* by <@{DEVELOPER}>" in (escalation.text or "")
    await bot.evo.wait_for_posts(1)
    assert dialled(bot) == [ALICE]
    await click_ack(bot, await page_of(bot, "U0ALICE"), user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    # Dialling a number of their choosing still needs a role.
    _, url = await bot.command("+18144043099 escalation", user_id=DEVELOPER)
    [refusal] = await bot.slack.wait_for_response(url)
    assert "not allowed to place calls" in refusal["text"] and "Manager" in refusal["text"]
    await bot.settle()
    assert dialled(bot) == [ALICE]


@pytest.mark.parametrize(
    "who", ["guest", "single-channel guest", "Slack Connect", "stranger", "deactivated"]
)
async def test_guests_and_other_organisations_are_not_responders(
    bot_factory: BotFactory, who: str
) -> None:
    bot, _ = await start(bot_factory)
    bot.slack.users["U0OTHER"] = {
        "guest": {"is_restricted": True},
        "single-channel guest": {"is_restricted": True, "is_ultra_restricted": True},
        "Slack Connect": {"team_id": "T0PARTNER"},
        # Someone from an organisation this one isn't connected with, met in a shared channel.
        "stranger": {"is_stranger": True},
        "deactivated": {"deleted": True},
    }[who]
    assert "not allowed to see who is on call" in await oncall_answer(bot, "U0OTHER")
    view, _ = await open_on_message(bot, user_id="U0OTHER")
    assert "submit" not in view.versions[-1]
    assert "not allowed to escalate to on-call" in json.dumps(view.versions[-1]["blocks"])


async def test_in_an_enterprise_grid_a_sibling_workspace_s_people_are_of_this_organisation(
    bot_factory: BotFactory,
) -> None:
    """In an Enterprise Grid organisation, someone whose home is another of its workspaces (their
    user object's `team_id`) is of this organisation all the same (`enterprise_user`'s
    `enterprise_id` is ours, as auth.test gives it): with `responders = "everyone"` they may
    escalate. Someone from another organisation (Slack Connect) still may not."""
    bot, _ = await start(bot_factory)
    bot.slack.enterprise_id = "E0ORG"
    bot.slack.users["U0SIBLING"] = {"team_id": "T0SIBLING", "enterprise_user": {
        "id": "U0SIBLING", "enterprise_id": "E0ORG", "teams": ["T0SIBLING", "T0TEAM"]}}
    bot.slack.users["U0PARTNER"] = {"team_id": "T0PARTNER", "enterprise_user": {
        "id": "U0PARTNER", "enterprise_id": "E0PARTNER", "teams": ["T0PARTNER"]}}
    assert "On call now:*" in await oncall_answer(bot, "U0SIBLING")
    view, _ = await open_on_message(bot, user_id="U0SIBLING")
    assert await submit(bot, view, user_id="U0SIBLING") == {}
    await bot.evo.wait_for_posts(1)
    assert "not allowed to see who is on call" in await oncall_answer(bot, "U0PARTNER")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_responders_narrow_who_may_escalate(bot_factory: BotFactory, mode: str) -> None:
    policy = ROSTER.replace('escalate_to = ["U0MANAGER"]', 'escalate_to = ["U0MANAGER", "U0DUTY"]')
    policy += 'responders = ["S0ONCALL", "U0CONTRACTOR"]\n'
    bot, _ = await start(bot_factory, mode, policy=policy)
    bot.slack.usergroups["S0ONCALL"] = ["U0SRE"]
    bot.slack.users["U0CONTRACTOR"] = {"is_restricted": True}  # a guest, listed by name

    # Outside the list: a full member is refused, the roster stays hidden.
    answer = await oncall_answer(bot, DEVELOPER)
    assert "not allowed to see who is on call" in answer and "3093" not in answer
    view, _ = await open_on_message(bot, user_id=DEVELOPER)
    assert "submit" not in view.versions[-1]
    # In the group, listed by name, in the rotation or escalate_to, holding a role: all allowed.
    for user_id in ("U0SRE", "U0CONTRACTOR", "U0BOB", "U0DUTY", "U0MANAGER"):
        assert "On call now:*" in await oncall_answer(bot, user_id), user_id
    view, _ = await open_on_message(bot, user_id="U0CONTRACTOR")
    assert await submit(bot, view, user_id="U0CONTRACTOR") == {}
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    # Someone outside the list can't acknowledge either (they are not paged).
    _, url = await click_ack(bot, escalation, user_id=DEVELOPER)
    [refused] = await bot.slack.wait_for_response(url)
    assert "can't acknowledge this page" in refused["text"]
    await click_ack(bot, escalation, user_id="U0SRE")  # a responder, not paged: may
    await wait_for_edit(bot, escalation, "<@U0SRE> acknowledged at")


async def test_a_user_group_slack_wont_list_keeps_no_responder_out(bot_factory: BotFactory) -> None:
    # [roles] names S0LEADS: it grants nobody a role while Slack won't list it, and nothing more.
    bot, _ = await start(bot_factory)
    bot.slack.fail("usergroups.users.list", "missing_scope")
    for user_id in (DEVELOPER, "U0BOB"):  # a full member; a member of the rotation
        assert "On call now:*" in await oncall_answer(bot, user_id), user_id
    view, _ = await open_on_message(bot, user_id=DEVELOPER)
    assert await submit(bot, view, user_id=DEVELOPER) == {}
    await bot.evo.wait_for_posts(1)
    assert dialled(bot) == [ALICE]


async def test_someone_slack_wont_describe_is_not_taken_for_a_full_member(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory)
    bot.slack.fail("users.info", "fatal_error")
    answer = await oncall_answer(bot, DEVELOPER)
    assert "could not check whether you may see who is on call" in answer
    assert "fatal_error" in answer and "3093" not in answer
    view, _ = await open_on_message(bot, user_id=DEVELOPER)
    assert "submit" not in view.versions[-1]
    assert "Try again in a minute" in json.dumps(view.versions[-1]["blocks"])
    # The rotation and the role holders are let in without asking Slack who they are.
    for user_id in ("U0BOB", "U0ADMIN"):
        assert "On call now:*" in await oncall_answer(bot, user_id), user_id


async def test_slack_not_saying_which_organisation_is_ours_lets_no_other_one_in(
    bot_factory: BotFactory,
) -> None:
    """Whether someone is from another organisation is read against the bot's own team
    (auth.test). A failed auth.test is not an answer: it was once kept for a day as "no team",
    and meanwhile everyone from a Slack Connect partner counted as a full member, free to page
    on-call and to acknowledge pages."""
    bot, _ = await start(bot_factory)
    bot.slack.users["U0OTHER"] = {"team_id": "T0PARTNER"}
    bot.slack.fail("auth.test", "fatal_error", times=1)
    answer = await oncall_answer(bot, "U0OTHER")
    assert "could not check whether you may see who is on call" in answer
    assert "fatal_error" in answer and "3093" not in answer
    # Once Slack answers, they are refused like anyone from another organisation.
    assert "not allowed to see who is on call" in await oncall_answer(bot, "U0OTHER")
    view, _ = await open_on_message(bot, user_id="U0OTHER")
    assert "submit" not in view.versions[-1]
    # A full member of this workspace is let in as before.
    assert "On call now:*" in await oncall_answer(bot, DEVELOPER)


@pytest.mark.parametrize("who", [DEVELOPER, "U0BOB"])  # a full member; a member of the rotation
async def test_a_responder_without_a_role_has_a_limit_of_their_own(
    bot_factory: BotFactory, who: str
) -> None:
    bot, _ = await start(bot_factory, policy=ROSTER + 'escalations_per_person = "1/1h"\n')
    view, _ = await open_on_message(bot, user_id=who)
    assert await submit(bot, view, user_id=who) == {}
    await bot.evo.wait_for_posts(1)
    view, _ = await open_on_message(bot, text="still down", user_id=who)
    answer = await submit(bot, view, user_id=who)
    assert answer["response_action"] == "errors"
    assert "You have started 1 escalation in the last hour" in (
        answer["errors"][EscalationField.REASON])
    assert 'rate_limit_refusals_total{limit="escalations_per_person"} 1.0' in metrics_text(bot)
    # Role holders have no such limit (each escalation started, and counted, before the next).
    for n, text in enumerate(("again", "and again"), start=2):
        view, _ = await open_on_message(bot, text=text, user_id="U0ADMIN")
        assert await submit(bot, view, user_id="U0ADMIN") == {}
        await bot.evo.wait_for_posts(n)
    await bot.settle()
    rows = await services(bot).db.fetchall("SELECT requester_id FROM escalations ORDER BY id")
    assert [r["requester_id"] for r in rows] == [who, "U0ADMIN", "U0ADMIN"]


async def _help(bot: BotUnderTest, user_id: str) -> str:
    ack, _ = await bot.command("help", user_id=user_id)
    return json.dumps(ack.body.get("blocks"), ensure_ascii=False)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_help_leads_with_escalating_and_lists_what_the_asker_may_do(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode)
    manager = await _help(bot, "U0MANAGER")
    assert manager.index("Escalate to on-call") < manager.index("/call oncall")
    for line in ("I'm on it", "`/call oncall`", "`/call oncall take`", "`/call history",
                 "`/call test`", "/call +18144043093 escalation"):
        assert line in manager, line
    developer = await _help(bot, DEVELOPER)
    assert "Escalate to on-call" in developer and "`/call oncall`" in developer
    assert "`/call oncall take`:" not in developer and "`/call history [" not in developer
    assert "need the Manager or SystemAdministrator role" in developer
    bot.slack.users["U0GUEST"] = {"is_restricted": True}
    guest = await _help(bot, "U0GUEST")
    assert "Escalate to on-call*:" not in guest and "add you to [oncall] responders" in guest
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_guests_help_says_placing_calls_needs_a_role_as_well_as_the_responders_list(
    bot_factory: BotFactory,
) -> None:
    # A guest is neither a responder (by default) nor a role holder: the help names both, or they
    # try /call with a number and only then learn it needs a role.
    bot, _ = await start(bot_factory, "http")
    bot.slack.users["U0GUEST"] = {"is_restricted": True}
    guest = await _help(bot, "U0GUEST")
    assert "add you to [oncall] responders" in guest
    assert ("Placing calls to any number, `/call history`, `/call test` and `/call oncall take` "
            "need the Manager or SystemAdministrator role.") in guest
    assert "`/call <number> <flow>" not in guest and "`/call test`:" not in guest


async def test_a_members_help_while_slack_cant_say_who_they_are_still_offers_escalating(
    bot_factory: BotFactory,
) -> None:
    """users.info failing (Slack having a bad moment) is no "you can't": a full member told to ask
    to be added to the responders, at 3 a.m., would not escalate. The help lists everything with
    who may use it, as when the roles can't be read."""
    bot, _ = await start(bot_factory, "http")
    bot.slack.fail("users.info", "internal_error")
    developer = await _help(bot, DEVELOPER)
    assert "Escalate to on-call" in developer
    assert "add you to [oncall] responders" not in developer
