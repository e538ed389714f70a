"""The database failing for a while (another process holding the write lock past the busy timeout,
which is how a full disk or a read-only file looks to callbot too: writes fail, reads go on).

Nothing is dialled unrecorded; the requester is told, with a reference; following a call and the
audit trail carry on once the database answers again."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from bot.audit.records import AuditRecord
from bot.calls.status_message import digest
from bot.oncall.escalation_store import EscalationState
from bot.slack.blocks import Message as Drawn
from bot.standins.evovoice import Gated
from bot.standins.slack import Message
from bot.storage.database import SQLITE, dialect_of, sqlite_path
from tests.conftest import BotFactory, BotUnderTest, until
from tests.database_locks import (
    recorded,
    tables_locked,
    until_logged,
    with_short_busy_timeout,
    with_short_lock_timeout,
    write_lock,
)
from tests.databases import POSTGRESQL
from tests.log_capture import entries_of, logged
from tests.escalations import ROSTER as ESCALATION_ROSTER
from tests.escalations import (
    ALICE,
    BOB,
    Clock,
    click_ack,
    click_stop,
    dialled,
    escalation_message,
    hung_up,
    in_the_channel,
    open_on_message,
    page_of,
    session_of,
    start,
    submit,
    wait_for_edit,
    wait_for_state,
)
from tests.follow_helpers import (
    FAST,
    FULL,
    audit_records,
    end_session,
    is_thread_reply,
    placed_call,
    services,
    status_message,
)
from tests.follow_helpers import wait_for_edit as wait_for_status

pytestmark = pytest.mark.usefixtures("database_retried_quickly")  # the tests end the faults


@pytest.fixture
def database_url(database_url: str) -> str:
    if dialect_of(database_url) != SQLITE:
        return database_url  # PostgreSQL's tests give their own (with_short_lock_timeout)
    return with_short_busy_timeout(database_url)


async def test_a_locked_database_dials_nothing_and_says_so_with_a_reference(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    with write_lock(bot):
        _, url = await bot.command(f"{FULL} escalation")
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
    text = str(answer)
    assert "could not write to its database, so nothing was dialled (reference " in text
    assert bot.evo.outgoing_posts == []
    await recorded(bot)  # the refusal reaches the audit trail once the lock is gone
    [record] = await audit_records(bot)
    assert record.decision != "allowed"


async def test_a_followed_call_outlives_a_locked_database(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.storage.faults")
    bot, status, session_id = await placed_call(bot_factory)
    with write_lock(bot):
        end_session(bot, session_id, after_seconds=30, outcome="Completed")
        await until_logged(caplog, "the database failed")
    await wait_for_status(bot, status, "Ended", timeout=30)
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["placed", "ended"]  # retried, not lost, once


async def test_an_escalation_carries_on_after_a_locked_database(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.storage.faults")
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    await wait_for_edit(bot, escalation, "🔔 ringing…")  # Alice's call is recorded
    with write_lock(bot):
        clock.advance(91)  # Alice's step ends while the database can't be written
        await until_logged(caplog, "escalation 1: the database failed")
    await bot.evo.wait_for_posts(2, timeout=30)  # the chain carried on: Bob is called
    assert dialled(bot) == [ALICE, BOB]
    texts = [str(c.params.get("text")) for c in bot.slack.calls_to("chat.postMessage")]
    assert not any("until callbot restarts" in t for t in texts)


async def test_a_call_whose_status_ts_could_not_be_saved_is_followed_all_the_same(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The database fails just as Slack answers the status message: its ts is saved (and the call
    # followed) once the database answers, instead of the message staying at "Ringing".
    caplog.set_level(logging.WARNING, logger="bot.storage.faults")
    bot = await bot_factory("http", **FAST)
    gate = bot.slack.hold("chat.postMessage", when=is_thread_reply, after=True)
    await bot.command(f"{FULL} escalation")
    await gate.wait_until_held(1, timeout=20)
    with write_lock(bot):
        gate.open()
        await until_logged(caplog, "the database failed")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await wait_for_status(bot, status, "Ended", timeout=30)


async def answered_while_the_database_is_locked(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> BotUnderTest:
    """A /call whose POST is answered while the database can't be written (unlocked again once
    a write has failed): the bot."""
    caplog.set_level(logging.WARNING, logger="bot.storage.faults")
    bot = await bot_factory("http", **FAST)
    answer = asyncio.Event()
    bot.evo.queue_outgoing(Gated(answer))
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    with write_lock(bot):
        answer.set()
        await until_logged(caplog, "the database failed")
    return bot


async def test_a_calls_result_met_by_a_locked_database_reaches_the_audit_trail_once(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The call was dialled: what Evo Voice answered must reach the audit trail, however long
    # the database stays locked after the POST (the call's row waits for it, then the record).
    bot = await answered_while_the_database_is_locked(bot_factory, caplog)

    async def placed() -> None:
        while not any(r.result for r in await audit_records(bot)):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(placed(), 30)
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["placed"]


async def test_a_call_whose_answer_met_a_locked_database_is_still_followed_to_its_end(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The call was dialled, and Evo Voice answered while the database was locked: the row is
    # filled in once the database answers (not left "dialling", unfollowed, until a restart),
    # so the status message shows how the call ends.
    bot = await answered_while_the_database_is_locked(bot_factory, caplog)
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await wait_for_status(bot, status, "Ended", timeout=30)
    [row] = await services(bot).db.fetchall("SELECT placement, following FROM calls")
    assert (row["placement"], row["following"]) == ("placed", 0)


def _unretrieved(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


async def wait_for_shown(bot: BotUnderTest, message: Message, text: str) -> None:
    """Wait until an edit of `message` saying `text` is taken by Slack."""
    await bot.slack.wait_for_call(
        "chat.update", lambda c: c.ok and c.params.get("ts") == message.ts
        and text in str(c.params.get("text")), timeout=10.0)


async def test_a_page_slack_took_while_the_database_was_locked_is_kept_and_shows_the_end(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Slack takes Alice's page just as the database stops answering: the page is recorded once
    # it answers (not lost, not posted again), so it is edited to the escalation's end.
    caplog.set_level(logging.WARNING, logger="bot.storage.faults")
    bot, _ = await start(bot_factory)
    gate = bot.slack.hold("chat.postMessage", when=lambda c: c.params.get("channel") == "U0ALICE",
                          after=True)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    card = await escalation_message(bot)
    await gate.wait_until_held(1, timeout=20)
    with write_lock(bot):
        gate.open()
        # Recording the page failed (unfixed, the task died: "Task exception was never
        # retrieved ... the page to U0ALICE").
        await until_logged(caplog, "the page to U0ALICE")
    page = await page_of(bot, "U0ALICE")
    await click_stop(bot, card, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.STOPPED)
    await wait_for_shown(bot, page, "<@U0ADMIN> stopped this escalation")
    await bot.settle()
    assert len([c for c in bot.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0ALICE"]) == 1  # paged once
    assert _unretrieved(caplog) == []


async def test_a_page_due_while_the_database_is_locked_is_sent_once_it_answers(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Alice's page waits for the card's first try (for its link); Slack takes the card just as
    # the database stops answering: the card's ts is kept and the page claimed and sent once it
    # answers, instead of the page never being sent and the card never edited.
    caplog.set_level(logging.WARNING, logger="bot.storage.faults")
    bot, _ = await start(bot_factory)
    gate = bot.slack.hold("chat.postMessage", when=in_the_channel, after=True)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await gate.wait_until_held(1, timeout=20)

    async def calling() -> None:  # Alice's step is recorded: her page waits for the card
        while not await services(bot).db.fetchall("SELECT 1 FROM escalation_steps"):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(calling(), 20)
    with write_lock(bot):
        gate.open()

        async def card_met_the_lock() -> None:  # (before the fix, the page's task died of it)
            while not any(text in r.getMessage() for r in caplog.records for text in (
                    "escalation 1: its card: the database failed", "the page to U0ALICE")):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(card_met_the_lock(), 20)
    page = await page_of(bot, "U0ALICE")
    assert "You are being paged" in (page.text or "")
    card = await escalation_message(bot)
    await click_stop(bot, card, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.STOPPED)
    await wait_for_shown(bot, card, "stopped by <@U0ADMIN>")
    await wait_for_shown(bot, page, "<@U0ADMIN> stopped this escalation")
    await bot.settle()
    assert len([c for c in bot.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0ALICE"]) == 1  # paged once
    assert len([c for c in bot.slack.calls_to("chat.postMessage") if in_the_channel(c)
                and "*On-call escalation*" in str(c.params.get("text"))]) == 1  # one card
    assert _unretrieved(caplog) == []


async def test_an_escalations_hang_up_met_by_a_locked_database_reaches_the_audit_trail_once(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Alice's step ends unanswered while the database can't be written: her call is hung up, and
    # that hang-up is a fact the append-only audit trail must keep, once the database answers.
    caplog.set_level(logging.WARNING)
    bot, clock, alice = await _alice_ringing(bot_factory)
    with logged("json") as stream, write_lock(bot):
        clock.advance(91)  # Alice's step ends while the database can't be written
        await until(lambda: hung_up(bot, alice), timeout=30)
        await until_logged(caplog, "escalation 1: the database failed")  # what follows it
    await _then_bob_and_alices_hang_up_once(bot, Path(sqlite_path(services(bot).db.url)
                                                      + ".audit-spool"))
    dropped = [r.getMessage() for r in caplog.records if "recording" in r.getMessage()]
    assert dropped == []  # was: "recording hang_up of call 1 failed", the record dropped
    # The chain's retries are found by the escalation's id (issue #15), each line naming a call
    # or an escalation carrying its id (entries_of).
    retries = [e for e in entries_of(stream)
               if e["message"].startswith("escalation 1: the database failed")]
    assert retries and all(e.get("escalation_id") == 1 for e in retries)


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_on_postgresql_a_status_message_the_outbox_cannot_keep_is_posted_all_the_same(
    bot_factory: BotFactory, database_url: str
) -> None:
    # Only the kept posts' table fails (locked past lock_timeout): the status message, kept until
    # delivered when the database answers, goes to Slack all the same and shows the outcome.
    bot = await bot_factory("http", **FAST, DATABASE_URL=with_short_lock_timeout(database_url))
    async with tables_locked(database_url, "slack_posts"):
        await bot.command(f"{FULL} escalation")
        status = await status_message(bot)
    assert "Call placed" in str(status.text)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await wait_for_status(bot, status, "Ended", timeout=30)


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_on_postgresql_an_escalations_hang_up_met_by_a_locked_audit_trail_is_kept(
    bot_factory: BotFactory, database_url: str, tmp_path: Path
) -> None:
    # Only the audit trail fails (its table locked past lock_timeout): the chain goes on at once,
    # and the hang-up's record must not be dropped on the way.
    spool = tmp_path / "audit-spool"
    bot, clock, alice = await _alice_ringing(
        bot_factory, AUDIT_SPOOL=str(spool), DATABASE_URL=with_short_lock_timeout(database_url))
    async with tables_locked(database_url, "audit_events"):
        clock.advance(91)  # Alice's step ends while her call's records can't be written
        await until(lambda: hung_up(bot, alice), timeout=30)
        await bot.evo.wait_for_posts(2, timeout=30)  # the chain carried on: Bob is called
    await _then_bob_and_alices_hang_up_once(bot, spool)


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_on_postgresql_an_acknowledgement_met_by_a_locked_audit_trail_is_kept(
    bot_factory: BotFactory, database_url: str, tmp_path: Path
) -> None:
    # I'm on it while Alice's call rings and the audit trail fails: her call is hung up and the
    # escalation acknowledged; both facts reach her call's record, once each (the
    # acknowledgement's is made under a claim, so a dropped one was never tried again).
    spool = tmp_path / "audit-spool"
    bot, _, alice = await _alice_ringing(
        bot_factory, AUDIT_SPOOL=str(spool), DATABASE_URL=with_short_lock_timeout(database_url))
    card = await escalation_message(bot)
    async with tables_locked(database_url, "audit_events"):
        await click_ack(bot, card, user_id="U0ADMIN")  # not paged, allowed to escalate
        await wait_for_state(bot, EscalationState.ACKNOWLEDGED, timeout=30)
        assert hung_up(bot, alice)

    def alices_events(records: list[AuditRecord]) -> list[tuple[str, str | None]]:
        [record] = records
        return [(e.kind, e.reason) for e in record.events
                if e.kind in ("hang_up", "acknowledged")]

    async def written() -> None:  # and nothing left waiting to be written
        while len(alices_events(await audit_records(bot))) < 2 or (
                spool.exists() and spool.read_text()):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(written(), 30)
    assert alices_events(await audit_records(bot)) == [
        ("hang_up", "escalation: acknowledged by U0ADMIN"),
        ("acknowledged", "escalation 1 acknowledged by U0ADMIN (I'm on it)"),
    ]


async def _alice_ringing(bot_factory: BotFactory, **env: str) -> tuple[BotUnderTest, Clock, str]:
    """An escalation whose first step (Alice) rings, recorded; its clock and Alice's session."""
    bot, clock = await start(bot_factory, **env)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    ringing = await bot.slack.wait_for_call(
        "chat.update", lambda c: c.params.get("ts") == escalation.ts
        and "🔔 ringing…" in str(c.params.get("text")))  # Alice's call is recorded
    # and so is that the card shows it (else that write, not the hang-up, meets the lock)
    blocks = ringing.params.get("blocks")
    drawn = digest(Drawn(str(ringing.params.get("text")),
                           json.loads(blocks) if isinstance(blocks, str) else blocks))

    async def kept() -> None:
        while (row := await services(bot).escalations.store.get(1)) is None or (
                row.shown_digest != drawn):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(kept(), 10)
    return bot, clock, session_of(bot, ALICE)


async def _then_bob_and_alices_hang_up_once(bot: BotUnderTest, spool: Path) -> None:
    """Bob is called next; Alice's call's hang-up is in the audit trail once, nothing left in
    `spool` to write."""
    await bot.evo.wait_for_posts(2, timeout=30)
    assert dialled(bot) == [ALICE, BOB]

    def alices_hang_ups(records: list[AuditRecord]) -> list[str | None]:
        [record] = [r for r in records if r.id == min(r.id for r in records)]
        return [e.reason for e in record.events if e.kind == "hang_up"]

    async def written() -> None:
        while not alices_hang_ups(await audit_records(bot)) or (
                spool.exists() and spool.read_text()):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(written(), 30)
    assert alices_hang_ups(await audit_records(bot)) == ["escalation: no answer in 90 s"]


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_an_escalation_form_opened_while_the_database_does_not_answer_says_so_in_words(
    bot_factory: BotFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Who would be called depends on the on-call overrides, in the database: the form opened
    while it doesn't answer says so and to try again, not that something went wrong to report."""
    bot, _ = await start(bot_factory, DATABASE_URL=with_short_lock_timeout(database_url))
    async with tables_locked(database_url, "oncall_overrides", reads_too=True):
        view, _ = await open_on_message(bot)
    shown = json.dumps(view.view, ensure_ascii=False)
    assert ("callbot could not read its database, so the escalation form can't say who would be "
            "called, and nobody was called (reference ") in shown
    assert "Something went wrong" not in shown
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
    again, _ = await open_on_message(bot)  # once it answers, the form is as ever
    assert "<@U0ALICE>" in json.dumps(again.view, ensure_ascii=False)


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_an_escalation_sent_by_one_with_a_limit_while_the_database_does_not_answer_says_so(
    bot_factory: BotFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A responder without a role has a limit of their own, counted in the database: sent while it
    doesn't answer, the form says so and to try again, not that something went wrong to report;
    once it answers, the same form starts the chain."""
    policy = ESCALATION_ROSTER + 'escalations_per_person = "2/1h"\n'
    bot, _ = await start(bot_factory, policy=policy,
                         DATABASE_URL=with_short_lock_timeout(database_url))
    view, _ = await open_on_message(bot, user_id="U0DEV")
    async with tables_locked(database_url, "escalations", reads_too=True):
        answer = await submit(bot, view, user_id="U0DEV")
    shown = json.dumps(answer, ensure_ascii=False)
    assert "callbot could not read its database" in shown and "(reference " in shown, shown
    assert "Something went wrong" not in shown
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert bot.evo.outgoing_posts == []
    assert await submit(bot, view, user_id="U0DEV") == {}
    await bot.evo.wait_for_posts(1)
