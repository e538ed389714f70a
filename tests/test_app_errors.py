"""The one error handler: a listener that fails is logged with a reference, before or after its
ack."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from slack_bolt.async_app import AsyncAck
from slack_bolt.response import BoltResponse

from bot.app import on_error
from bot.errors import unexpected_words
from bot.standins.slack import block_actions_payload, interactive_body
from tests.conftest import BotUnderTest
from tests.follow_helpers import services
from tests.interactions import interact, open_form, state, submission


async def test_before_the_ack_the_requester_gets_a_reference() -> None:
    answer = await on_error(RuntimeError("boom"), {}, BoltResponse(status=200, body=""))
    assert answer is not None and "reference" in str(answer.body)


async def test_after_the_ack_nothing_is_returned() -> None:
    # Bolt asserts if an error handler returns a response when there is none to change.
    assert await on_error(RuntimeError("boom"), {}, None) is None


async def test_a_listener_failing_after_its_ack_is_logged_not_lost(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    assert bot.runtime.app is not None
    failed = asyncio.Event()

    async def failing(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        # Failing after the ack: the error is logged, whether or not the ack has left yet.
        await asyncio.sleep(0.1)
        failed.set()
        raise RuntimeError("listener bug")

    bot.runtime.app.action("test_failing_action")(failing)
    payload = block_actions_payload(action_id="test_failing_action", value="x")
    if bot.mode == "socket":
        await bot.slack.send_envelope("interactive", payload)
    else:
        assert (await bot.post_signed(interactive_body(payload))).status == 200
    await asyncio.wait_for(failed.wait(), 5)
    for _ in range(200):
        if "unhandled error in a listener, reference" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "unhandled error in a listener, reference" in caplog.text
    await asyncio.sleep(0.05)
    assert "response must be provided" not in caplog.text


async def test_a_form_whose_submission_meets_a_bug_shows_the_reference_in_the_form(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    # A form's answer can't carry a text (Slack shows "We had some trouble connecting", or closes
    # the modal without a word): the reference goes under the form's first field instead.
    caplog.set_level(logging.ERROR)
    view = await open_form(bot, "+18144043093")

    async def bug(key: str) -> bool:
        raise RuntimeError("a bug in claiming")

    services(bot).claims.claim = bug  # type: ignore[method-assign]
    answer = await interact(bot, submission(view, state(flow="flow-wake", reason="INC-42")))
    assert answer.get("response_action") == "errors", answer
    [(field, words)] = answer["errors"].items()
    inputs = [b["block_id"] for b in view.versions[-1]["blocks"] if b.get("type") == "input"]
    assert field == inputs[0]
    reference = words.split("reference ")[1].split(")")[0]
    assert words == f"Something went wrong on our side (reference {reference}). Tell the " \
        "callbot operators."
    assert f"unhandled error in a listener, reference {reference}" in caplog.text
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_call_command_that_meets_a_bug_before_its_ack_answers_with_the_reference(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/call reaches its listener from a middleware of its own (CallCommandFirst), not Bolt's
    listener runner: a bug before its ack is still answered by the app's error handler, in the
    ack, with the reference of the log line that holds the traceback."""
    caplog.set_level(logging.ERROR)

    async def a_bug(*_: object, **__: object) -> None:
        raise RuntimeError("a bug in reading roles")

    monkeypatch.setattr(services(bot).access, "roles_of", a_bug)
    ack, _ = await bot.command("help")
    assert ack.status == 200
    reference = ack.text.split("reference ")[1].split(")")[0]
    assert unexpected_words(reference) in ack.text
    assert f"unhandled error in a listener, reference {reference}" in caplog.text
    await bot.settle()
    assert bot.evo.outgoing_posts == []
