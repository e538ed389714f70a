"""A form submitted while the database fails: nothing starts, the person reads why in the form
(or privately, once it has closed), and the same form can be submitted again once the database
answers. The call form and the escalation form alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners import escalation as escalation_listener
from bot.oncall.escalation_form import EscalationField
from bot.oncall.roster import PhoneBook
from tests.conftest import BotFactory, BotUnderTest
from bot.storage.database import SQLITE, dialect_of
from tests.database_locks import (
    tables_locked,
    with_short_busy_timeout,
    with_short_lock_timeout,
    write_lock,
)
from tests.databases import POSTGRESQL
from tests.escalations import ALICE, open_on_message, start, submit
from tests.follow_helpers import services
from tests.interactions import interact, open_form, refused_then_sent_again, state, submission

FULL = "+18144043093"
NOT_WRITTEN = "callbot could not write to its database, so "


@pytest.fixture
def database_url(database_url: str) -> str:
    if dialect_of(database_url) != SQLITE:
        return database_url  # PostgreSQL's tests give their own (with_short_lock_timeout)
    return with_short_busy_timeout(database_url)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_call_form_sent_while_the_database_is_locked_says_so_and_can_be_sent_again(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot = await bot_factory(mode)
    view = await open_form(bot, FULL)
    await refused_then_sent_again(bot, view, FULL, failing=write_lock(bot))


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_a_call_form_whose_call_cant_be_written_after_it_closed_is_told_privately(
    bot_factory: BotFactory, database_url: str,
) -> None:
    # Only the calls' table fails (locked past lock_timeout): the form's claim is written and the
    # form closes; then the call's row can't be, so nothing is dialled, and the person, who has
    # no form left to read it in, is told so through the command's response_url.
    bot = await bot_factory("http", DATABASE_URL=with_short_lock_timeout(database_url))
    url = bot.slack.response_url()
    view = await open_form(bot, FULL, response_url=url)
    async with tables_locked(database_url, "calls"):
        assert await interact(bot, submission(view, state(flow="flow-esc"))) == {}
        [told] = await bot.slack.wait_for_response(url, timeout=20)
        await bot.settle()
    assert NOT_WRITTEN + "nothing was dialled (reference " in str(told.get("text")), told
    assert told.get("response_type") != "in_channel", told
    assert bot.evo.outgoing_posts == []


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_an_escalation_form_sent_while_the_database_is_locked_says_so_and_can_be_sent_again(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot, _ = await start(bot_factory, mode)
    form, _ = await open_on_message(bot)
    with write_lock(bot):
        answer = await submit(bot, form)
    assert answer.get("response_action") == "errors", answer
    assert NOT_WRITTEN + "nobody was called (reference " in answer["errors"][EscalationField.REASON]
    await bot.settle()
    assert bot.evo.outgoing_posts == []

    assert await submit(bot, form) == {}
    await bot.evo.wait_for_posts(1)
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [ALICE]


async def _escalation_whose_row_meets_a_locked_database(
    bot_factory: BotFactory, client: AsyncWebClient, *, form_closed: bool,
    acks_hold_work_for: float | None = None,
) -> tuple[dict[str, Any], BotUnderTest]:
    """Escalate; the database is locked after the form's claim, while the order of people is
    worked out (Carol's number comes from her Slack profile, which Slack is slow to give), so the
    row can't be written. `form_closed`: Slack gives it only after the form's ack has gone.
    `acks_hold_work_for`: how long work may wait for the acks being sent (bot/tasks.py)."""
    bot, _ = await start(bot_factory)
    if acks_hold_work_for is not None:
        services(bot).tasks.acks.max_wait = acks_hold_work_for
    form, _ = await open_on_message(bot)
    policy = services(bot).policy
    services(bot).oncall.phones = PhoneBook(client, policy.people, policy.dial_policy)
    carol = bot.slack.hold("users.info", when=lambda call: call.params.get("user") == "U0CAROL")
    submitting = asyncio.ensure_future(submit(bot, form))
    await carol.wait_until_held()
    with write_lock(bot):
        if form_closed:
            assert await submitting == {}
        carol.open()
        answer = await submitting
        await bot.settle()
    assert await services(bot).db.fetchall("SELECT id FROM escalations") == []
    assert bot.evo.outgoing_posts == []
    return answer, bot


@pytest.mark.parametrize("acks_hold_work_for", [None, 3600.0], ids=["default", "an hour"])
async def test_an_escalation_whose_row_cant_be_written_is_refused_in_the_form(
    bot_factory: BotFactory, client: AsyncWebClient, acks_hold_work_for: float | None,
) -> None:
    """The work the Submit starts answers the Submit's own ack, so it starts at once, not once
    the acks being sent are out: that would be after its own, and its refusal too late for the
    form (with acks-first's default cap, every escalation form's ack waited it out, 0.25 s)."""
    answer, _ = await _escalation_whose_row_meets_a_locked_database(
        bot_factory, client, form_closed=False, acks_hold_work_for=acks_hold_work_for)
    assert answer.get("response_action") == "errors", answer
    assert NOT_WRITTEN + "nobody was called (reference " in answer["errors"][EscalationField.REASON]


async def test_an_escalation_whose_row_cant_be_written_after_its_form_closed_is_told_privately(
    bot_factory: BotFactory, client: AsyncWebClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Slack holds the profile until the form has closed, however long the ack's budget: 0.5 s of
    # it (the checks take far less), not 2 s of real time.
    monkeypatch.setattr(escalation_listener, "VALIDATION_BUDGET_SECONDS", 0.5)
    _, bot = await _escalation_whose_row_meets_a_locked_database(
        bot_factory, client, form_closed=True)
    told = [body for bodies in bot.slack.responses.values() for body in bodies
            if NOT_WRITTEN + "nobody was called (reference " in str(body.get("text"))]
    assert len(told) == 1 and told[0].get("response_type") != "in_channel", told
