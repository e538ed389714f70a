"""An "are you sure?" question whose Call was refused for a while (a limit filled since it was
asked, the database failing before the dial) is asked again, its buttons with it: the person
clicks Call once more rather than type the /call again. That click is a new request, checked
again; a question is never taken twice, nor a call placed twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.calls.confirm_views import CONFIRM_CALL_ACTION
from bot.standins.evovoice import ErrorStatus, Gated
from tests.conftest import BotFactory, BotUnderTest, policy_with
from tests.databases import on_both_databases
from tests.follow_helpers import audit_records, first_insert_loses_its_answer
from tests.interactions import ask, button, click

US = "+18144043093"
CANADA = "+14165550123"


def asked_again(answer: dict[str, Any], question: dict[str, Any]) -> None:
    """`answer` replaces the question's message with the question, its buttons and its id."""
    assert answer["replace_original"] is True, answer
    assert "Canada (CA)" in answer["text"], answer["text"]
    assert "Your Call was refused just now, so nothing has been dialled" in answer["text"]
    assert (button(answer, CONFIRM_CALL_ACTION)["value"]
            == button(question, CONFIRM_CALL_ACTION)["value"])


def dialled(bot: BotUnderTest) -> list[str]:
    return [str(post.json["numberToDial"]) for post in bot.evo.outgoing_posts]


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_question_whose_call_a_limit_refused_is_asked_again_and_dials_once_it_fits(
    bot_factory: BotFactory, mode: str,
) -> None:
    # Asked, then the person's own limit fills (another call of theirs on its way): Call is
    # refused with when to call again. Once that call failed (Evo Voice refused it: its slot is
    # given back), the same question's Call dials, once.
    # (The held call waits for the test, not for the bot's usual timeout.)
    bot = await bot_factory(mode, policy=policy_with(per_user="1/10m"), EVOVOICE_TIMEOUT="30")
    question = await ask(bot, f"{CANADA} escalation")
    held = asyncio.Event()
    bot.evo.queue_outgoing(Gated(held, then=ErrorStatus(400, "Flow is disabled")))
    await bot.command(f"{US} escalation")
    await bot.evo.wait_for_posts(1)

    _, url = await click(bot, question)
    # (Not settled: that would wait for the held call.)
    confirmed, refused, again = await bot.slack.wait_for_response(url, n=3)
    assert "Confirmed" in confirmed["text"]
    assert "You have placed 1 call in the last 10 minutes" in refused["text"], refused["text"]
    asked_again(again, question)
    assert dialled(bot) == [US]

    held.set()  # the other call fails: nothing rang, its slot is given back
    await bot.settle()
    _, url = await click(bot, again)
    await bot.evo.wait_for_posts(2)
    await bot.settle()
    assert dialled(bot) == [US, CANADA]
    assert "Confirmed" in bot.slack.responses_to(url)[0]["text"]
    # Taken by that click: one more is a double click, and dials nothing.
    _, url = await click(bot, again)
    await bot.settle()
    assert bot.slack.responses_to(url) == []
    assert dialled(bot) == [US, CANADA]


@on_both_databases
async def test_a_question_whose_call_the_database_failed_is_asked_again_and_dials_once(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The writes before the POST commit and lose their answer: nothing is dialled, "Try again in a
    # minute" is said, and the question is back to try again with, not gone with its buttons.
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    lost = first_insert_loses_its_answer(bot, monkeypatch)
    _, url = await click(bot, question)
    await bot.settle()
    assert lost
    confirmed, refused, again = bot.slack.responses_to(url)
    assert "could not write to its database, so nothing was dialled" in refused["text"]
    assert "Try again in a minute" in refused["text"]
    asked_again(again, question)
    assert dialled(bot) == []

    _, url = await click(bot, again)
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert dialled(bot) == [CANADA]
    _, url = await click(bot, again)  # a double click: nothing more
    await bot.settle()
    assert bot.slack.responses_to(url) == []
    assert dialled(bot) == [CANADA]
    # The question in the trail once, confirmed once; what each click that took it led to names
    # it (the refused attempt's, the placed one's).
    records = await audit_records(bot)
    [asked] = [r for r in records if r.decision == "asked"]
    assert [e.kind for e in asked.events] == ["confirmed"]
    assert {r.confirmed_question for r in records if r is not asked} == {asked.id}
    assert records[0].decision == "allowed" and records[0].result is not None
    assert records[0].result.kind == "placed"
