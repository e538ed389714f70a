"""A write on a request's path that committed but whose answer was lost (the connection dropped
after COMMIT, a PostgreSQL failover), before the bot told the person anything: what they are told
is true, and the retry it asks for works. On both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.oncall.escalation_form import EscalationField
from tests.claim_faults import AnswerLost, AtomicAnswerLost
from tests.conftest import BotFactory, until
from tests.databases import on_both_databases
from tests.escalations import ALICE, IN_ALICES_SHIFT, ROSTER, open_on_message, start, submit
from tests.follow_helpers import audit_records, first_insert_loses_its_answer, services
from tests.interactions import open_form, refused_then_sent_again

FULL = "+18144043093"
NOT_WRITTEN = "callbot could not write to its database, so "


@on_both_databases
async def test_a_call_form_whose_claim_lost_its_answer_can_be_sent_again_and_dials(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = await bot_factory()
    view = await open_form(bot, FULL)
    claims = services(bot).claims
    fault = AnswerLost(claims, f"form:T0TEAM:{view.id}")
    monkeypatch.setattr(claims, "claim", fault)
    await refused_then_sent_again(bot, view, FULL)
    assert fault.lost


@on_both_databases
async def test_an_escalation_form_whose_claim_lost_its_answer_can_be_sent_again_and_rings(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot, _ = await start(bot_factory)
    form, _ = await open_on_message(bot)
    claims = services(bot).claims
    fault = AnswerLost(claims, f"escalation-form:T0TEAM:{form.id}")
    monkeypatch.setattr(claims, "claim", fault)
    answer = await submit(bot, form)
    assert fault.lost
    assert answer.get("response_action") == "errors", answer
    assert NOT_WRITTEN + "nobody was called (reference " in answer["errors"][EscalationField.REASON]
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    assert await submit(bot, form) == {}
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [ALICE]


@on_both_databases
async def test_an_escalation_whose_row_lost_its_answer_can_be_sent_again_and_rings_once(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The escalation's row (with its lease) commits, then its answer is lost: the person is told
    # nobody was called and to try again; the Submit that does rings Alice, once.
    bot, _ = await start(bot_factory)
    form, _ = await open_on_message(bot)
    store = services(bot).escalations.store
    real = store.create
    lost: list[int] = []

    async def create(**kwargs: Any) -> Any:
        made = await real(**kwargs)
        if not lost:
            assert made is not None
            lost.append(made.id)
            raise ConnectionError("connection lost after COMMIT")
        return made

    monkeypatch.setattr(store, "create", create)
    answer = await submit(bot, form)
    await bot.settle()
    assert lost
    told = answer.get("errors", {}).get(EscalationField.REASON) or str(answer)
    assert NOT_WRITTEN + "nobody was called (reference " in told, answer
    assert bot.evo.outgoing_posts == []
    assert await submit(bot, form) == {}
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [ALICE]
    # The row written without an answer is gone, not left to be driven after a restart.
    rows = await services(bot).db.fetchall("SELECT id FROM escalations")
    assert [row["id"] for row in rows] != lost and len(rows) == 1


@on_both_databases
@pytest.mark.usefixtures("database_retried_quickly")  # the test ends the fault
async def test_an_escalation_row_the_database_kept_failing_to_give_back_holds_no_thread(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The escalation's row (with its lease) commits, its answer is lost, and the database still
    # fails as that row is given back: the requester is told nobody was called at once, not once
    # the database answers (they would hear nothing meanwhile, and could believe on-call paged).
    # That is so, and stays so: once the database answers, the row is given back in the
    # background and does not hold the message's thread as an escalation "still paging" there, so
    # a new form on the message starts one, and rings Alice once; no chain is left to ring people
    # after the next restart.
    bot, _ = await start(bot_factory)
    form, message = await open_on_message(bot)
    store = services(bot).escalations.store
    db, real_create = store.db, store.create
    real_atomic = db.atomic
    lost: list[int] = []
    refused: list[object] = []  # the give-back's tries the database refused
    answers = asyncio.Event()  # the database answers the give-back again

    async def create(**kwargs: Any) -> Any:
        made = await real_create(**kwargs)
        if not lost:
            assert made is not None
            lost.append(made.id)
            raise ConnectionError("connection lost after COMMIT")
        return made

    async def atomic(unit: Any) -> Any:
        if getattr(unit, "__qualname__", "").startswith("Unanswered.") and not answers.is_set():
            refused.append(unit)
            raise ConnectionError("the database is still failing")
        return await real_atomic(unit)

    monkeypatch.setattr(store, "create", create)
    monkeypatch.setattr(db, "atomic", atomic)
    answer = await submit(bot, form)
    assert lost and refused
    told = answer.get("errors", {}).get(EscalationField.REASON) or str(answer)
    assert NOT_WRITTEN + "nobody was called (reference " in told, answer
    await until(lambda: len(refused) >= 2)  # tried again in the background, still failing
    answers.set()

    async def given_back() -> bool:
        return not await real_atomic(lambda conn: conn.fetchall(
            "SELECT id FROM escalations WHERE id = ?", (lost[0],)))

    while not await given_back():
        await asyncio.sleep(0.01)
    again, _ = await open_on_message(bot, on=message)
    assert await submit(bot, again) == {}
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [ALICE]
    rows = await db.fetchall("SELECT id FROM escalations")
    assert [row["id"] for row in rows] != lost and len(rows) == 1


@on_both_databases
async def test_a_call_whose_writes_before_the_post_lost_their_answer_can_be_made_again_at_once(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The rate-limit slot, the attempt's record, the call's row and its lease commit together,
    # then their answer is lost: nothing is dialled, and the requester is told so and to try
    # again. Trying again dials, at once: it is not asked whether to call again a number it
    # "called" seconds ago, nor counted against the limits for a call never made.
    bot = await bot_factory()
    lost = first_insert_loses_its_answer(bot, monkeypatch)
    _, url = await bot.command(f"{FULL} escalation")
    [answer] = await bot.slack.wait_for_response(url, timeout=20)
    await bot.settle()
    assert lost
    assert NOT_WRITTEN + "nothing was dialled (reference " in str(answer), answer
    assert bot.evo.outgoing_posts == []
    # The attempt's record, committed with the row, says how it ended.
    [record] = [r for r in await audit_records(bot) if r.decision == "allowed"]
    assert [e.kind for e in record.events] == ["failed"]
    _, url = await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert "ago" not in str(bot.slack.responses_to(url)), bot.slack.responses_to(url)
    await bot.evo.wait_for_posts(1)
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [FULL]
    assert await services(bot).db.fetchall(
        "SELECT id FROM calls WHERE placement = 'dialling'") == []


@on_both_databases
async def test_an_oncall_take_whose_override_lost_its_answer_leaves_the_shift_as_it_was(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The override commits, then its answer is lost: the taker is told the shift was not taken.
    # That is so: Alice is still on call, and taking again announces who was replaced.
    bot = await bot_factory(policy=ROSTER)
    services(bot).oncall.clock = lambda: IN_ALICES_SHIFT
    db = services(bot).db
    fault = AtomicAnswerLost(db, "INSERT INTO oncall_overrides")
    monkeypatch.setattr(db, "atomic", fault)
    _, url = await bot.command("oncall take", user_id="U0MANAGER")
    [answer] = await bot.slack.wait_for_response(url, timeout=20)
    await bot.settle()
    assert fault.lost
    assert NOT_WRITTEN + "the on-call shift was not taken (reference " in str(answer), answer
    _, url = await bot.command("oncall", user_id="U0ADMIN")
    [status] = await bot.slack.wait_for_response(url, timeout=20)
    assert "On call now:* <@U0ALICE>" in str(status["text"]), status
    await bot.command("oncall take", user_id="U0MANAGER")
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "<@U0MANAGER> is now on call instead of <@U0ALICE>" in announcement.params["text"]


@on_both_databases
@pytest.mark.usefixtures("database_retried_quickly")  # the fault is one lost answer
async def test_an_escalation_step_whose_writes_before_the_post_lost_their_answer_rings_once(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The step's call row, its attempt's record and its lease commit together, then their answer
    # is lost: nothing was dialled. The chain dials the step when the database answers again,
    # once, and leaves no row "being dialled" behind for a restart to take for a call that rang.
    bot, _ = await start(bot_factory)
    lost = first_insert_loses_its_answer(bot, monkeypatch)
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    await bot.evo.wait_for_posts(1, timeout=20)
    db = services(bot).db

    async def placed() -> None:
        while not await db.fetchall("SELECT id FROM calls WHERE placement = 'placed'"):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(placed(), 10)
    await bot.settle()
    assert lost
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [ALICE]
    assert await db.fetchall("SELECT id FROM calls WHERE placement = 'dialling'") == []
