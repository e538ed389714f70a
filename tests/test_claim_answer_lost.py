"""A claim whose write committed but whose answer was lost (the connection dropped after COMMIT, a
PostgreSQL failover) is tried again by its holder, and granted to it again: the page and the step's
call it guards are done once, not by nobody (bot/storage/claims.py). On both databases."""

from __future__ import annotations

from typing import Any

import pytest

from bot.storage.claims import Claims
from tests.conftest import BotFactory, BotUnderTest
from tests.databases import on_both_databases
from tests.escalations import (
    ALICE,
    dialled,
    escalation_message,
    open_on_message,
    page_of,
    start,
    submit,
)
from tests.follow_helpers import services


class AnswerLost:
    """`Claims.claim`, except that the first claim of `key` commits and then loses its answer
    (raising as a dropped connection does)."""

    def __init__(self, claims: Claims, key: str) -> None:
        self._real = claims.claim
        self._key = key
        self.lost = 0

    async def __call__(self, key: str, **kwargs: Any) -> bool:
        taken = await self._real(key, **kwargs)
        if key == self._key and not self.lost:
            assert taken
            self.lost += 1
            raise ConnectionError("connection lost after COMMIT")
        return taken


async def _escalation_losing_the_answer_to(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch, key: str
) -> tuple[BotUnderTest, AnswerLost]:
    bot, _ = await start(bot_factory)
    claims = services(bot).claims
    fault = AnswerLost(claims, key)
    monkeypatch.setattr(claims, "claim", fault)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    return bot, fault


@on_both_databases
async def test_a_step_whose_claim_lost_its_answer_is_dialled_once(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, fault = await _escalation_losing_the_answer_to(
        bot_factory, monkeypatch, "escalation:1:step:0")
    await bot.evo.wait_for_posts(1, timeout=20)  # Alice's phone rings all the same
    await page_of(bot, "U0ALICE")
    await bot.settle()
    assert fault.lost == 1
    assert dialled(bot) == [ALICE]


@on_both_databases
async def test_a_page_whose_claim_lost_its_answer_is_sent_once(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, fault = await _escalation_losing_the_answer_to(
        bot_factory, monkeypatch, "escalation:1:step:0:page")
    page = await page_of(bot, "U0ALICE")  # sent all the same
    assert "You are being paged" in (page.text or "")
    await bot.settle()
    assert fault.lost == 1
    assert len([c for c in bot.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0ALICE"]) == 1
    assert dialled(bot) == [ALICE]

