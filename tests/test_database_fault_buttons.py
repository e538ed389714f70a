"""The database failing (another process holding the write lock past the busy timeout) when
someone clicks a button: the clicker is told in plain words, with one reference, what was not
done; nothing is dialled unaudited or twice; what a click did is recorded once the database
answers again."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from contextlib import closing

import pytest

from bot.calls.confirm_views import CANCEL_CALL_ACTION
from bot.calls.status_views import CALL_AGAIN_ACTION, HANG_UP_ACTION
from bot.oncall.escalation_store import EscalationState
from bot.storage.database import sqlite_path
from tests.claim_faults import AnswerLost
from tests.conftest import BotFactory, BotUnderTest
from tests.follow_helpers import audit_records, end_session, placed_call, services
from tests.follow_helpers import click as click_status
from tests.follow_helpers import wait_for_edit as wait_for_status
from tests.interactions import ask
from tests.interactions import click as click_question
from tests.database_locks import until_logged, with_short_busy_timeout, write_lock
from tests.escalations import (
    ALICE,
    click_ack,
    click_stop,
    hung_up,
    running_escalation,
    session_of,
    state_of,
    wait_for_state,
)

CANADA = "+14165550123"
REFERENCE = re.compile(r"\(reference [0-9A-Za-z_.-]+\)")

pytestmark = pytest.mark.usefixtures("database_retried_quickly")  # the tests end the faults


@pytest.fixture
def database_url(database_url: str) -> str:
    return with_short_busy_timeout(database_url)


def told(answer: dict[str, object], not_done: str) -> None:
    """The words a database fault gets: what was not done, one reference, what to do."""
    text = str(answer["text"])
    assert f"callbot could not write to its database, so {not_done} (reference " in text, text
    assert len(REFERENCE.findall(text)) == 1
    assert "Try again in a minute" in text


async def test_confirming_or_cancelling_with_a_locked_database_is_told_and_dials_nothing(
    bot: BotUnderTest,
) -> None:
    question = await ask(bot, f"{CANADA} escalation")
    with write_lock(bot):
        _, url = await click_question(bot, question)
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        told(answer, "nothing was dialled")
        _, url = await click_question(bot, question, CANCEL_CALL_ACTION)
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        told(answer, "the call was not cancelled")
        await bot.settle()
    assert bot.evo.outgoing_posts == []
    # The question stayed, its buttons with it: once the database answers, "Call" dials once.
    assert answer["replace_original"] is False
    await click_question(bot, question)
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    record, asked = await audit_records(bot)
    assert record.decision == "allowed" and record.result is not None
    # The clicks the database refused left no answer in the trail: the one taken did.
    assert [(e.kind, e.actor_id) for e in asked.events] == [("confirmed", "U0MANAGER")]


async def test_hang_up_with_a_locked_database_hangs_up_and_records_it_once_it_answers(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    bot, status, session_id = await placed_call(bot_factory)
    await bot.settle()  # the status message's ts is kept: its buttons work

    async def hung_up() -> None:
        while not bot.evo.hang_ups(session_id):
            await asyncio.sleep(0.01)

    with write_lock(bot):
        _, url = await click_status(bot, status, HANG_UP_ACTION)
        await asyncio.wait_for(hung_up(), 20)  # reading the call's row needs no write
        await until_logged(caplog, "an audit record waits")  # the hang-up's record met the lock
    await wait_for_status(bot, status, "Hung up by <@U0MANAGER>", timeout=30)
    await bot.settle()
    assert bot.slack.responses_to(url) == []  # nothing false said: it was hung up
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events].count("hang_up") == 1  # recorded once, not lost


async def test_call_again_with_a_locked_database_dials_nothing_and_says_so(
    bot_factory: BotFactory,
) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(bot, status, "Ended")
    with write_lock(bot):
        _, url = await click_status(bot, status, CALL_AGAIN_ACTION)
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        await bot.settle()
    told(answer, "nothing was dialled")
    assert len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_stop_escalation_with_a_locked_database_is_told_and_stops_nothing(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _, escalation = await running_escalation(bot_factory, mode)
    with write_lock(bot):
        _, url = await click_stop(bot, escalation, user_id="U0ADMIN")
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
    told(answer, "the escalation was not stopped")
    assert await state_of(bot) == EscalationState.RUNNING
    assert not hung_up(bot, session_of(bot, ALICE))
    await click_stop(bot, escalation, user_id="U0ADMIN")  # the database answers: it stops
    await wait_for_state(bot, EscalationState.STOPPED)
    assert hung_up(bot, session_of(bot, ALICE))


async def test_i_m_on_it_with_a_locked_database_is_told_it_was_not_recorded(
    bot_factory: BotFactory,
) -> None:
    bot, _, escalation = await running_escalation(bot_factory)
    with write_lock(bot):
        _, url = await click_ack(bot, escalation, user_id="U0ALICE")
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
    told(answer, "your acknowledgement was not recorded")
    assert await state_of(bot) == EscalationState.RUNNING
    await click_ack(bot, escalation, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)


async def test_a_confirmation_click_refused_by_the_database_can_be_clicked_again(
    bot: BotUnderTest,
) -> None:
    question = await ask(bot, f"{CANADA} escalation")
    # The database fails while the click takes the question (its table gone for a moment, as if
    # the disk failed there, after the click's claim could be written): the clicker is told...
    path = sqlite_path(services(bot).db.url)
    rename(path, "pending_confirmations", "pending_confirmations_away")
    try:
        _, url = await click_question(bot, question)
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        told(answer, "nothing was dialled")
        await bot.settle()
    finally:
        rename(path, "pending_confirmations_away", "pending_confirmations")
    assert bot.evo.outgoing_posts == []
    assert answer["replace_original"] is False
    # ...and "Try again" works: the next click dials, once.
    await click_question(bot, question)
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


def rename(path: str, table: str, to: str) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute(f"ALTER TABLE {table} RENAME TO {to}")


async def test_call_again_refused_by_the_database_after_its_checks_can_be_clicked_again(
    bot_factory: BotFactory,
) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(bot, status, "Ended")
    # The database fails at the write before the POST (the attempts' table gone for a moment),
    # after the click passed its checks and was claimed.
    path = sqlite_path(services(bot).db.url)
    rename(path, "audit_attempts", "audit_attempts_away")
    try:
        _, url = await click_status(bot, status, CALL_AGAIN_ACTION)
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        await bot.settle()
    finally:
        rename(path, "audit_attempts_away", "audit_attempts")
    told(answer, "nothing was dialled")
    assert len(bot.evo.outgoing_posts) == 1
    # "Try again" works: the next click dials, once.
    await click_status(bot, status, CALL_AGAIN_ACTION)
    await bot.evo.wait_for_posts(2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


async def test_call_again_whose_claim_lost_its_answer_can_be_clicked_again(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    end_session(bot, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(bot, status, "Ended")
    # The click's claim commits, then its answer is lost (a connection dropped after COMMIT):
    # nothing is dialled, and the clicker is told so and asked to try again.
    [call] = await services(bot).db.fetchall("SELECT id FROM calls")
    claims = services(bot).claims
    fault = AnswerLost(claims, f"again:{call['id']}")
    monkeypatch.setattr(claims, "claim", fault)
    _, url = await click_status(bot, status, CALL_AGAIN_ACTION)
    [answer] = await bot.slack.wait_for_response(url, timeout=20)
    await bot.settle()
    assert fault.lost
    told(answer, "nothing was dialled")
    assert len(bot.evo.outgoing_posts) == 1
    # Trying again dials, once: it is not refused as a second click of a call made again.
    _, url = await click_status(bot, status, CALL_AGAIN_ACTION)
    await bot.settle()
    assert bot.slack.responses_to(url) == [], bot.slack.responses_to(url)
    assert len(bot.evo.outgoing_posts) == 2
