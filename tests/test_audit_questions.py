""""Are you sure?" questions in the audit trail: asked (who, the number masked and hashed, what it
asked about), then how each ended: cancelled and by whom, expired, or confirmed, tied to the
attempt of the call its Call started. `/call history` shows them.
"""

from __future__ import annotations

import asyncio
import time

from bot.audit.trail import AuditRecord
from bot.calls.confirm_views import CANCEL_CALL_ACTION
from tests.conftest import BotFactory, BotUnderTest
from tests.databases import on_both_databases
from tests.follow_helpers import FULL, MASKED, audit_records, history, lines, services
from tests.interactions import ask, click

CANADA = "+14165550123"
CANADA_MASKED = "+1 416 ••• 0123"


async def all_audit_text(bot: BotUnderTest) -> str:
    db = services(bot).db
    rows = await db.fetchall("SELECT * FROM audit_attempts")
    rows += await db.fetchall("SELECT * FROM audit_events")
    return "\n".join(str(tuple(row)) for row in rows)


def questions(records: list[AuditRecord]) -> list[AuditRecord]:
    return [r for r in records if r.decision == "asked"]


@on_both_databases
async def test_a_question_cancelled_is_in_the_audit_trail_and_the_history(
    bot: BotUnderTest,
) -> None:
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    question = await ask(bot, f"{FULL} escalation")  # the same call again: a repeat
    _, url = await click(bot, question, CANCEL_CALL_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    assert "Cancelled" in answer["text"]
    await bot.settle()

    [asked] = questions(await audit_records(bot))
    assert (asked.team_id, asked.user_id, asked.channel_id) == ("T0TEAM", "U0MANAGER", "C0OPS")
    assert asked.number_masked == MASKED
    assert asked.number_hash == services(bot).audit.number_hash(FULL)
    assert (asked.flow, asked.flow_id, asked.reason) == ("Escalation", "flow-esc", "repeat")
    assert [(e.kind, e.actor_id) for e in asked.events] == [("cancelled", "U0MANAGER")]
    assert "8144043093" not in await all_audit_text(bot)
    assert len(bot.evo.outgoing_posts) == 1  # the first call only

    newest = lines(await history(bot))[0]
    assert MASKED in newest and "<@U0MANAGER>" in newest
    assert ("❓ asked to confirm (a repeat call): cancelled by <@U0MANAGER>, nothing dialled"
            in newest), newest


@on_both_databases
async def test_a_question_that_expired_is_recorded_when_the_bot_erases_it(
    bot_factory: BotFactory,
) -> None:
    # Nobody clicks: the lease keeper's sweep erases it (its number is in clear) and records
    # that it expired, within seconds; a click coming later records nothing more.
    bot = await bot_factory("http", LEASE_SECONDS="3")  # the keeper's rounds: every 0.5 s
    question = await ask(bot, f"{CANADA} escalation")
    confirmations = services(bot).confirmations
    confirmations.clock = lambda: time.time() + 601  # eleven minutes later
    services(bot).leases.wake()
    db = services(bot).db
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await db.fetchall("SELECT id FROM pending_confirmations"):
        assert loop.time() < deadline, "the expired question was never erased"
        await asyncio.sleep(0.05)
    _, url = await click(bot, question)
    [answer] = await bot.slack.wait_for_response(url)
    assert "expired" in answer["text"]
    await bot.settle()

    [asked] = await audit_records(bot)
    assert (asked.decision, asked.reason, asked.number_masked) == ("asked", "region",
                                                                     CANADA_MASKED)
    assert [(e.kind, e.actor_id) for e in asked.events] == [("expired", None)]
    [line] = lines(await history(bot))
    assert "❓ asked to confirm (outside the home regions): expired unanswered" in line, line
    assert bot.evo.outgoing_posts == []


@on_both_databases
async def test_a_question_clicked_once_expired_is_recorded_expired_once(
    bot_factory: BotFactory,
) -> None:
    # The click may find it before the sweep does, or after: either way one `expired`.
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    services(bot).confirmations.clock = lambda: time.time() + 601
    _, url = await click(bot, question, CANCEL_CALL_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    assert "expired" in answer["text"] and "Cancelled" not in answer["text"]
    await bot.settle()
    await services(bot).confirmations.forget_expired()  # a sweep after it finds nothing more
    [asked] = await audit_records(bot)
    assert [(e.kind, e.actor_id) for e in asked.events] == [("expired", None)]


@on_both_databases
async def test_a_confirmed_question_is_tied_to_the_attempt_of_its_call(
    bot: BotUnderTest,
) -> None:
    question = await ask(bot, f"{CANADA} escalation")
    await click(bot, question)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1

    call, asked = await audit_records(bot)  # newest first
    assert (asked.decision, asked.reason) == ("asked", "region")
    assert [(e.kind, e.actor_id) for e in asked.events] == [("confirmed", "U0MANAGER")]
    assert call.decision == "allowed" and call.result is not None
    assert call.result.kind == "placed"
    assert call.confirmed_question == asked.id
    assert call.number_hash == asked.number_hash == services(bot).audit.number_hash(CANADA)

    call_line, question_line = lines(await history(bot))
    assert "📞 placed, in progress" in call_line and "confirmed" in call_line
    assert ("❓ asked to confirm (outside the home regions): confirmed by <@U0MANAGER>"
            in question_line), question_line


async def test_a_confirmed_call_refused_on_its_second_check_names_its_question(
    bot_factory: BotFactory,
) -> None:
    # The click is a new request, checked again: refused, its record still says which question
    # it answered.
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation", user_id="U0LEAD1")
    bot.slack.usergroups["S0LEADS"] = ["U0LEAD2"]  # U0LEAD1 loses the role before clicking
    services(bot).access.forget_groups()
    await click(bot, question, user_id="U0LEAD1")
    await bot.settle()
    refused, asked = await audit_records(bot)
    assert (refused.decision, refused.reason) == ("denied", "RoleDenied")
    assert refused.confirmed_question == asked.id
    assert [(e.kind, e.actor_id) for e in asked.events] == [("confirmed", "U0LEAD1")]
