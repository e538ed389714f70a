"""Slack's limits on what the bot posts: the Block Kit primitives that keep every post within them,
the Slack stand-in refusing what Slack refuses (response_url posts and acks included), and the two
posts that used to break: a refusal listing 250 owned caller IDs, an escalation of 120 people.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from bot.slack import blocks
from bot.slack.blocks import Message
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn, ack_problems, message_problems
from tests.conftest import POLICY, POLICY_NO_REPEAT_QUESTION, BotFactory
from tests.escalations import (
    CHANNEL,
    click_stop,
    escalation_message,
    has_stop_button,
    open_on_message,
    start,
    submit,
    wait_for_edit,
)
from tests.follow_helpers import status_message

# ------------------------------------------------------------------------------- the primitives


def test_clip_never_cuts_a_mention_or_an_entity() -> None:
    assert blocks.clip("short", 10) == "short"
    assert blocks.clip("call <@U0ALICE> now", 12) == "call…"
    assert blocks.clip("a &amp; b", 5) == "a…"
    assert len(blocks.clip("x" * 5000, 3000)) == 3000


def test_listing_says_how_many_are_left_out() -> None:
    numbers = [f"+1814555{n:04d}" for n in range(250)]
    text = blocks.listing(numbers, 200)
    assert len(text) <= 200
    assert text.startswith("+18145550000, +18145550001")
    shown = text.split(" and ")[0].split(", ")
    assert text.endswith(f" and {250 - len(shown)} more")
    assert blocks.listing(["a", "b"], 200) == "a, b"
    assert blocks.listing([], 200) == "none"


def test_lines_are_packed_into_sections_within_the_limit() -> None:
    lines = [f"{i}. <@U{i:08d}> — ⏳ waiting" for i in range(300)]
    packed = blocks.sections(lines)
    assert len(packed) > 1
    assert all(len(b["text"]["text"]) <= blocks.MAX_TEXT for b in packed)
    assert "\n".join(b["text"]["text"] for b in packed) == "\n".join(lines)


def test_a_message_keeps_its_buttons_when_shortened_to_fifty_blocks() -> None:
    buttons = {"type": "actions", "elements": []}
    message = Message("x" * 50_000, [blocks.section(str(i)) for i in range(80)] + [buttons])
    kwargs = message.as_kwargs()
    assert len(kwargs["blocks"]) == blocks.MAX_MESSAGE_BLOCKS
    assert kwargs["blocks"][-1] is buttons
    assert "and 32 more not shown" in kwargs["blocks"][-2]["elements"][0]["text"]
    assert len(kwargs["text"]) == blocks.MAX_MESSAGE_TEXT
    assert not message_problems(kwargs)


# ---------------------------------------------------------------------------- the Slack stand-in


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def _option(n: int) -> dict[str, object]:
    return {"text": _plain(f"option {n}"), "value": f"v{n}"}


@pytest.mark.parametrize("body", [
    {"text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]},
    {"text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]},
    {"text": "t",
     "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}] * 11}]},
    {"text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}] * 51},
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "b"},
         "value": "v" * 2001}]}]},
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "b"},
         "confirm": {"title": {"type": "plain_text", "text": "t"},
                     "text": {"type": "plain_text", "text": "x" * 301},
                     "confirm": {"type": "plain_text", "text": "ok"},
                     "deny": {"type": "plain_text", "text": "no"}}}]}]},
    # menus: placeholders, option descriptions, overflow and checkbox counts, option groups
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "static_select", "action_id": "s", "placeholder": _plain("p" * 151),
         "options": [_option(0)]}]}]},
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "static_select", "action_id": "s",
         "options": [{**_option(0), "description": _plain("d" * 76)}]}]}]},
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "overflow", "action_id": "o", "options": [_option(i) for i in range(6)]}]}]},
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "checkboxes", "action_id": "c", "options": [_option(i) for i in range(11)]}]}]},
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "static_select", "action_id": "s", "option_groups": [
            {"label": _plain(f"g{g}"), "options": [_option(g * 60 + i) for i in range(60)]}
            for g in range(2)]}]}]},
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "static_select", "action_id": "s", "option_groups": [
            {"label": _plain("g" * 76), "options": [_option(0)]}]}]}]},
    # shapes
    {"text": "t", "blocks": [{"type": "sektion", "text": {"type": "mrkdwn", "text": "x"}}]},
    {"text": "t", "blocks": [{"type": "section", "block_id": "b"}]},
    {"text": "t", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]},
    {"text": "t", "blocks": [{"type": "actions", "elements": [
        {"type": "button", "action_id": "a", "text": {"type": "mrkdwn", "text": "b"}}]}]},
    {"text": "t", "blocks": [{"type": "divider", "block_id": "same"}] * 2},
    # dates Slack can't format (shown as written): no fallback, a fraction, a token it lacks
    {"text": "t", "blocks": [blocks.section("at <!date^1700000000^{date_short_pretty} {time}>")]},
    {"text": "t", "blocks": [blocks.section("at <!date^1700000000.5^{time}|10:00 UTC>")]},
    {"text": "t", "blocks": [blocks.context("at <!date^1700000000^{hour}:{minute}|10:00 UTC>")]},
    {"text": "at <!date^^{time}|10:00 UTC>", "blocks": [blocks.section("x")]},
])
async def test_the_stand_in_refuses_what_slack_refuses_on_a_response_url(
    slack: SlackStandIn, body: dict[str, object]
) -> None:
    url = slack.response_url()
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as response:
        assert response.status == 400
        assert await response.text() == "invalid_blocks"
    assert slack.responses_to(url) == []
    assert message_problems(body)


_FORM = {"type": "view_submission", "view": {"blocks": [
    {"type": "input", "block_id": "number", "label": {"type": "plain_text", "text": "Number"},
     "element": {"type": "plain_text_input", "action_id": "number"}},
    {"type": "section", "block_id": "note", "text": {"type": "mrkdwn", "text": "A note"}},
]}}
_OPTION = {"text": {"type": "plain_text", "text": "Escalation"}, "value": "flow-esc"}


@pytest.mark.parametrize(("payload", "ack", "refused"), [
    (_FORM, {"response_action": "errors", "errors": {"number": "Not a number"}}, False),
    (_FORM, {"response_action": "errors", "errors": {"note": "Not a number"}}, True),
    (_FORM, {"response_action": "errors", "errors": {}}, True),
    (_FORM, {"response_action": "close"}, True),
    (_FORM, {"text": "Something went wrong"}, True),
    (_FORM, {"response_action": "update", "view": {"type": "modal", "blocks": [],
                                                     "title": {"type": "plain_text",
                                                               "text": "x" * 25}}}, True),
    (_FORM, {"response_action": "push", "view": {
        "type": "modal", "blocks": [], "title": {"type": "mrkdwn", "text": "x"}}}, True),
    (_FORM, {"response_action": "update", "view": {
        "type": "modal", "title": {"type": "plain_text", "text": "Call"},
        "submit": {"type": "plain_text", "text": "Call"},
        "blocks": [{"type": "input", "label": {"type": "plain_text", "text": "Number"}}]}}, True),
    ({"type": "block_suggestion"}, {"options": [_OPTION] * 100}, False),
    ({"type": "block_suggestion"}, {"options": [_OPTION] * 101}, True),
    ({"type": "block_suggestion"}, {"options": [{**_OPTION, "value": "v" * 151}]}, True),
    ({"type": "block_suggestion"}, {"option_groups": [
        {"label": _plain("A"), "options": [_OPTION] * 50},
        {"label": _plain("B"), "options": [_OPTION] * 50}]}, False),
    ({"type": "block_suggestion"}, {"option_groups": [
        {"label": _plain("A"), "options": [_OPTION] * 60},
        {"label": _plain("B"), "options": [_OPTION] * 60}]}, True),
], ids=["error-under-an-input", "error-under-no-input", "no-errors", "unknown-action", "text",
        "update-too-long-title", "push-mrkdwn-title", "update-input-without-element",
        "100-options", "101-options", "long-value", "100-grouped", "120-grouped"])
def test_the_stand_in_refuses_an_ack_slack_refuses(
    payload: dict[str, object], ack: dict[str, object], refused: bool
) -> None:
    # Field errors go only in a view_submission's ack, each under an input block; a
    # block_suggestion's ack is its answer, at most 100 options (docs/slack-platform.md).
    assert bool(ack_problems(payload, ack)) is refused


# ------------------------------------------------------------------- posts that used to break


MANY_NUMBERS = [
    {"id": f"ep-{n}", "displayName": f"Line {n}", "phoneNumber": f"+1814555{n:04d}",
     "accountId": "acct-1"}
    for n in range(100, 350)
]


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_refusal_listing_250_owned_caller_ids_reaches_the_requester(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, mode: str
) -> None:
    evo.phone_numbers[:] = MANY_NUMBERS
    bot = await bot_factory(mode)
    ack, url = await bot.command("+18144043093 escalation +18149990000")
    [answer] = await bot.slack.wait_for_response(url)
    assert "is not one of the account's phone numbers" in answer["text"]
    assert "+18145550100, +18145550101" in answer["text"]
    assert len(answer["text"]) < 1500
    assert " more. Leave it out to use the default." in answer["text"]
    assert not message_problems(answer)
    assert not bot.evo.outgoing_posts


def test_the_stand_in_takes_the_dates_slack_formats() -> None:
    # `<!date^timestamp^token_string^optional_link|fallback_text>`, in blocks and in the text.
    when = blocks.slack_time(1700000000.75)
    assert when == "<!date^1700000000^{date_short_pretty} {time}|2023-11-14 22:13 UTC>"
    linked = "<!date^1700000000^Posted {date_num} {time_secs}^https://example.com/|Posted then>"
    body = {"text": f"at {when}", "blocks": [blocks.section(f"at {when}, {linked}"),
                                             blocks.context(when)]}
    assert not message_problems(body)


def test_the_stand_in_counts_characters_as_utf16_code_units() -> None:
    assert not message_problems({"blocks": [blocks.section("🔥" * 1500)]})
    assert message_problems({"blocks": [{"type": "section", "text": {
        "type": "mrkdwn", "text": "🔥" * 1501}}]})
    assert len(blocks.clip("🔥" * 2990, 3000)) == 1500  # 1,499 emoji and "…"
    assert blocks.slack_length(blocks.clip("a🔥" * 2000, 3000)) <= 3000


def _roster(people: int) -> str:
    ids = [f"U0P{n:03d}" for n in range(people)]
    numbers = "\n".join(f'{uid} = "+1814404{n:04d}"' for n, uid in enumerate(ids))
    return POLICY + f"""
[people]
{numbers}

[oncall]
flow = "Escalation"
rotation = {json.dumps(ids)}
timezone = "America/New_York"
"""


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_an_escalation_of_many_people_is_posted_and_can_be_stopped(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode, policy=_roster(120))
    view, message = await open_on_message(bot)
    assert not message_problems({"blocks": view.versions[-1]["blocks"]})
    await submit(bot, view)
    escalation = await escalation_message(bot)
    assert has_stop_button(escalation)
    assert "120. <@U0P" in json.dumps(escalation.blocks)
    await bot.evo.wait_for_posts(1)
    await click_stop(bot, escalation, user_id="U0ADMIN")
    await wait_for_edit(bot, escalation, "stopped by <@U0ADMIN>.")
    assert [m.text for m in bot.slack.channel_messages(CHANNEL)] == [message.text]


async def test_every_test_s_bot_meets_slack_s_posting_limit(bot_factory: BotFactory) -> None:
    """Slack's posting limit is on for every bot the tests start (tests/conftest.py): three calls
    at once in one channel are six posts, and those past the burst are refused and sent again."""
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION)
    numbers = ["+18144043093", "+18144043094", "+18144043095"]
    for number in numbers:
        await bot.command(f"{number} escalation")
    statuses = [await status_message(bot, i + 1) for i in range(len(numbers))]
    await bot.settle()
    posts = bot.slack.calls_to("chat.postMessage")
    assert any(c.status == 429 for c in posts)
    assert len([c for c in posts if c.ok]) == 2 * len(numbers)  # every one posted in the end
    assert all(s.thread_ts is not None for s in statuses)
    assert bot.slack.response_posts == []


async def test_a_429_is_waited_out_for_its_retry_after_then_tried_again(
    slack: SlackStandIn,
) -> None:
    """The bot's Slack client tries a rate-limited call twice more, each after the Retry-After
    Slack gave (and up to a second of jitter, as slack_sdk does), on the clock it is given."""
    from bot.app import create_slack_client
    from bot.config import load_settings

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    slack.fail("users.info", "ratelimited", times=2, retry_after=7)
    settings = load_settings(
        _env_file=None, slack_bot_token=slack.bot_token, slack_api_url=slack.api_url,
        slack_signing_secret="s", evovoice_username="u", evovoice_password="p",
    )
    async with aiohttp.ClientSession() as session:
        client = create_slack_client(settings, session, sleep=sleep)
        answer = await client.users_info(user="U0ALICE")
    assert answer["ok"]
    assert [c.status for c in slack.calls_to("users.info")] == [429, 429, 200]
    assert len(pauses) == 2 and all(7 <= p < 8 for p in pauses), pauses


async def test_a_scripted_429_holds_its_channel_for_its_retry_after(slack: SlackStandIn) -> None:
    """As Slack does: after a 429 for a channel, a message there is refused until Retry-After has
    passed (a bot that tries again sooner is refused again); other channels post meanwhile."""
    now = [100.0]
    slack.limit_posting(per_second=1.0, burst=3, clock=lambda: now[0])
    slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=5,
               when=lambda c: c.params.get("channel") == "C0HELD")

    async def post(session: aiohttp.ClientSession, channel: str) -> int:
        async with session.post(
            slack.api_url + "chat.postMessage", json={"channel": channel, "text": "hi"},
            headers={"Authorization": f"Bearer {slack.bot_token}"},
        ) as answer:
            return answer.status

    async with aiohttp.ClientSession() as session:
        assert await post(session, "C0HELD") == 429
        now[0] += 4
        assert await post(session, "C0HELD") == 429  # a second too soon
        assert await post(session, "C0OTHER") == 200
        now[0] += 1
        assert await post(session, "C0HELD") == 200


async def test_an_escalation_flow_of_a_very_long_name_leaves_the_card_its_timeout(
    bot_factory: BotFactory,
) -> None:
    # The card's footer named the flow whole: one named in thousands of characters (Evo Voice
    # sets no limit) took the context's 3,000, and the clip cut off how long each person has and
    # how to acknowledge. The name is shortened, as in a call's status message.
    policy = _roster(3).replace('flow = "Escalation"', 'flow = "flow-esc"')
    bot, _ = await start(bot_factory, policy=policy)
    for flow in bot.evo.flows:
        if flow["id"] == "flow-esc":
            flow["name"] = "Escalation " + "for the database team " * 200
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    footer = escalation.blocks[-2]["elements"][0]["text"]
    assert footer.startswith("Flow “Escalation for the database team")
    assert "each person has" in footer and "to acknowledge" in footer
    await click_stop(bot, escalation, user_id="U0ADMIN")
    await wait_for_edit(bot, escalation, "stopped by <@U0ADMIN>.")
