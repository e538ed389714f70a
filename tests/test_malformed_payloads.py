"""Requests of shapes Slack never sends, whose parts Bolt reads without checking their types
(bot/slack/shapes.py): refused before Bolt sees them, in both modes, with a warning and never an
ERROR, a 500 or "Something went wrong"."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from typing import Any

import pytest

from bot.calls.form import CALL_FORM_CALLBACK_ID
from bot.calls.status_views import HANG_UP_ACTION
from bot.standins.slack import interactive_body, sign
from tests import escalations
from tests.conftest import SIGNING_SECRET, BotFactory, BotUnderTest
from tests.databases import on_both_databases
from tests.follow_helpers import services

TEAM = {"team_id": "T0TEAM", "api_app_id": "A0APP"}
CLICKER = {"team": {"id": "T0TEAM"}, "user": {"id": "U0MANAGER"}}
ACTION = {"action_id": HANG_UP_ACTION, "block_id": "b", "value": "1"}
HOOK = "https://hooks.slack.com/actions/T0TEAM/1/x"
FORM_VIEW = {"type": "modal", "id": "V0VIEW", "callback_id": CALL_FORM_CALLBACK_ID,
             "state": {"values": {}}}

# (the Socket Mode envelope's type, the payload, the part it gets wrong)
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("events_api", {"type": "event_callback", **TEAM, "event": "app_home_opened"}, "event"),
    ("events_api", {"type": "event_callback", **TEAM, "event": ["x"]}, "event"),
    ("events_api", {"type": "event_callback", **TEAM, "event": None}, "event"),
    ("events_api", {"type": "event_callback", **TEAM,
                    "event": {"type": "app_home_opened", "user": 5}}, "event.user"),
    ("events_api", {"type": "event_callback", **TEAM, "authorizations": "x",
                    "event": {"type": "app_home_opened", "user": "U0MANAGER"}},
     "authorizations"),
    ("interactive", {"type": "view_submission", **CLICKER, "view": "x"}, "view"),
    ("interactive", {"type": "view_submission", **CLICKER, "view": ["x"]}, "view"),
    ("interactive", {"type": "view_submission", **CLICKER,
                     "view": {"callback_id": CALL_FORM_CALLBACK_ID, "state": {}}}, "view.type"),
    ("interactive", {"type": "view_submission", **CLICKER, "response_urls": "x",
                     "view": {"type": "modal", "callback_id": CALL_FORM_CALLBACK_ID}},
     "response_urls"),
    # Beside a response_url, which Bolt reads instead: the forms' listeners read it all the same.
    ("interactive", {"type": "view_submission", **CLICKER, "response_url": HOOK,
                     "response_urls": ["x"], "view": FORM_VIEW}, "response_urls"),
    ("interactive", {"type": "view_submission", **CLICKER, "response_url": HOOK,
                     "response_urls": {"block_id": "x"}, "view": FORM_VIEW}, "response_urls"),
    ("interactive", {"type": "view_closed", **CLICKER, "view": "x"}, "view"),
    ("interactive", {"type": "block_suggestion", **CLICKER, "action_id": "flow", "view": "x"},
     "view"),
    ("interactive", {"type": "block_actions", **CLICKER, "actions": "x"}, "actions"),
    ("interactive", {"type": "block_actions", **CLICKER, "actions": ["x"]}, "actions"),
    ("interactive", {"type": "block_actions", **CLICKER, "actions": []}, "actions"),
    ("interactive", {"type": "block_actions", **CLICKER, "actions": [{"value": "1"}]}, "actions"),
    ("interactive", {"type": "block_actions", "team": {"id": "T0TEAM"}, "user": 5,
                     "actions": [ACTION]}, "user"),
    # JSON's "\ud800" escape: half a UTF-16 pair, which no database, log or post can encode.
    ("interactive", {"type": "block_actions", **CLICKER, "user": {"id": "U0\ud800"},
                     "actions": [{**ACTION, "action_ts": "1700000000.1"}]}, "unpaired surrogate"),
    ("interactive", {"type": "block_actions", **CLICKER,
                     "actions": [{**ACTION, "action_ts": "1700000000.\udfff"}]},
     "unpaired surrogate"),
    ("events_api", {"type": "event_callback", **TEAM, "event": {
        "type": "app_home_opened", "user": "U0MANAGER", "tab": "home\ud800"}},
     "unpaired surrogate"),
]


def _id(case: tuple[str, dict[str, Any], str]) -> str:
    return f"{case[1]['type']}-{case[2]}-{json.dumps(case[1])[-12:]}"


async def _refused_over_socket_mode(
    bot: BotUnderTest, envelope: str, payload: dict[str, Any], part: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    envelope_id = await bot.slack.post_envelope(envelope, payload)

    async def warned() -> None:
        while not any(f"({part})" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(warned(), 10)
    await bot.settle()
    # Unacknowledged, as Bolt leaves a request no listener of it takes.
    assert bot.slack.envelopes[envelope_id].ack is None


@pytest.mark.parametrize(("envelope", "payload", "part"), MALFORMED, ids=map(_id, MALFORMED))
async def test_a_payload_bolt_would_fail_on_is_refused_before_it(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, envelope: str,
    payload: dict[str, Any], part: str,
) -> None:
    caplog.set_level(logging.WARNING)
    if bot.mode == "socket":
        await _refused_over_socket_mode(bot, envelope, payload, part, caplog)
    else:
        if envelope == "events_api":  # the Events API posts JSON; interactions a form
            body = json.dumps(payload).encode()
            headers = {**sign(body, SIGNING_SECRET), "Content-Type": "application/json"}
        else:
            body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
            headers = sign(body, SIGNING_SECRET)
        async with bot.http.post(bot.events_url, data=body, headers=headers) as response:
            answer = await response.text()
            assert response.status == 400, answer
        assert "Something went wrong" not in answer
    await bot.settle()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert json.dumps(payload) not in caplog.text  # its part named, never its content
    assert bot.evo.outgoing_posts == []


@pytest.mark.parametrize("kind", [[], {"a": 1}, 5])
async def test_a_payload_whose_type_is_no_word_is_left_unhandled(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, kind: Any,
) -> None:
    # No listener takes it; Bolt leaves it unhandled (HTTP: 404; Socket Mode: no ack), and the
    # bot's own bookkeeping of the request (its kind, for the metrics) does not fail on it.
    caplog.set_level(logging.WARNING)
    payload = {"type": kind, **CLICKER}
    if bot.mode == "socket":
        envelope_id = await bot.slack.post_envelope("interactive", payload)

        async def unhandled() -> None:
            while not any("Unhandled request" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(unhandled(), 10)
        assert bot.slack.envelopes[envelope_id].ack is None
    else:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        async with bot.http.post(bot.events_url, data=body,
                                 headers=sign(body, SIGNING_SECRET)) as response:
            assert response.status == 404, await response.text()
    await bot.settle()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []



@on_both_databases
@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_nul_in_a_forms_text_is_written_as_a_replacement_character(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture, mode: str,
) -> None:
    """The escalation form's reason holding a NUL (JSON's "\u0000", which a message posted by an
    integration may hold, quoted into the reason): PostgreSQL stores no text holding one, so
    writing the escalation's row failed, and the form said "Something went wrong on our side"
    under an unhandled ERROR. The NUL is written as U+FFFD before Bolt reads the request, and the
    escalation starts on either database."""
    caplog.set_level(logging.WARNING)
    bot, _ = await escalations.start(bot_factory, mode)
    view = await escalations.open_global(bot)
    answer = await escalations.submit(bot, view, reason="db primary\u0000 is down",
                                      channel="C0OPS")
    assert "errors" not in answer, answer
    await bot.evo.wait_for_posts(1)
    rows = await services(bot).db.fetchall("SELECT reason FROM escalations")
    assert [row["reason"] for row in rows] == ["db primary\ufffd is down"]
    assert "a NUL in the" in caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@on_both_databases
@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_click_whose_ids_hold_a_nul_is_acked_and_fails_nothing(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture, mode: str,
) -> None:
    """Its claim (made of the click's ids) failed after the ack on PostgreSQL; its ids, written
    with U+FFFD, now name no call: the button is told it no longer works, as a forged one is."""
    bot = await bot_factory(mode)
    payload = {"type": "block_actions", **CLICKER, "response_url": bot.slack.response_url(),
               "container": {"channel_id": "C0OPS", "message_ts": "1700000000.000100"},
               "actions": [{**ACTION, "action_ts": "1700000000.1\u0000"}]}
    if mode == "socket":
        await bot.slack.send_envelope("interactive", payload)
    else:
        ack = await bot.post_signed(interactive_body(payload))
        assert ack.status == 200, ack.body
    await bot.settle()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert bot.evo.outgoing_posts == []
