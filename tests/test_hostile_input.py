"""Property-based attacks on the running bot (hypothesis): whatever arrives, no 500, and no call
unless the request was valid, allowed and confirmed by the rules."""

from __future__ import annotations

import logging
import time
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.calls.command_text import CallArgs, CommandRejected, parse_command
from bot.calls.confirm_views import CANCEL_CALL_ACTION, CONFIRM_CALL_ACTION
from bot.calls.status_views import CALL_AGAIN_ACTION, HANG_UP_ACTION
from bot.errors import CallbotError
from bot.oncall.escalation_views import ACK_ESCALATION_ACTION, STOP_ESCALATION_ACTION
from bot.oncall.home_views import HOME_CALL_ACTION, HOME_ESCALATE_ACTION
from bot.phone import check_dialable, to_e164
from bot.calls.form import CALL_FORM_CALLBACK_ID, PLACE_CALL_SHORTCUT_ID, FormField
from bot.oncall.escalation_form import (
    ESCALATE_GLOBAL_SHORTCUT_ID,
    ESCALATE_MESSAGE_SHORTCUT_ID,
    ESCALATION_FORM_CALLBACK_ID,
)
from bot.standins.slack import (
    block_actions_payload,
    block_suggestion_payload,
    global_shortcut_payload,
    message_shortcut_payload,
    sign,
    slash_command_body,
    slash_command_payload,
    view_submission_payload,
)
from tests.conftest import SIGNING_SECRET, BotFactory, BotUnderTest
from tests.strategies import digits, joined

# One bot serves every example of a test, as one deployment serves every request.
FIXTURE_SHARED = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=40)


@pytest.fixture
async def http_bot(bot_factory: BotFactory) -> BotUnderTest:
    return await bot_factory("http")


@FIXTURE_SHARED
@given(
    body=st.one_of(
        st.binary(max_size=600),
        st.text(max_size=300).map(str.encode),
        st.dictionaries(st.text(max_size=12), st.text(max_size=60), max_size=8).map(
            lambda d: "&".join(f"{k}={v}" for k, v in d.items()).encode()
        ),
        st.builds(
            lambda text, extra: slash_command_body(text=text, response_url="http://127.0.0.1:9/r")
            + extra,
            st.text(max_size=60), st.binary(max_size=40),
        ),
        st.text(max_size=200).map(lambda t: b"payload=" + t.encode()),
    ),
    signed=st.booleans(),
    timestamp=st.one_of(st.none(), HEADER_TEXT, st.integers(-10**12, 10**13).map(str)),
    signature=st.one_of(st.none(), HEADER_TEXT),
    content_type=st.sampled_from([
        "application/x-www-form-urlencoded", "application/json", "text/plain",
        "multipart/form-data", "", "application/x-www-form-urlencoded; charset=latin-1",
    ]),
)
async def test_the_http_endpoint_never_answers_500(
    http_bot: BotUnderTest, body: bytes, signed: bool, timestamp: str | None,
    signature: str | None, content_type: str,
) -> None:
    if signed:
        headers = sign(body, SIGNING_SECRET)
    else:
        headers = {}
        if timestamp is not None:
            headers["X-Slack-Request-Timestamp"] = timestamp
        if signature is not None:
            headers["X-Slack-Signature"] = signature
    if content_type:
        headers["Content-Type"] = content_type
    async with http_bot.http.post(http_bot.events_url, data=body, headers=headers) as response:
        await response.read()
        status = response.status
    assert status in (200, 400, 401, 404), (status, body[:80], headers)
    if not signed:
        assert status == 401


# A mix of plain junk and text shaped like a real command, so that valid calls happen too.
NUMBERS = st.one_of(
    st.sampled_from(["+18144043093", "(814) 404-3094", "+1 416 555 0123", "+1 900 555 0123",
                     "+44 20 7946 0018", "+1 809 555 1234", "814404309", "+18144043093x12",
                     "+1814404309３", "+800 1234 5678", "+1 814 404 3093 #5"]),
    joined(st.just("+1814404"), digits(4, 4)),  # \+1814404[0-9]{4}
    st.text(alphabet="0123456789+()-. x#", min_size=1, max_size=20),
)
FLOWS = st.one_of(
    st.sampled_from(["escalation", "Wake Up Call", "wake-up-call", "page", "PAGE", "flow-esc",
                     "daily check", "nope", "“escalation”"]),
    st.text(max_size=20),
)
CALLER_IDS = st.one_of(st.none(), st.sampled_from(["+18145550100", "+18145550101",
                                                   "+18145550199", "+1 814 555 0101", "x"]))
COMMAND_TEXT = st.one_of(
    st.text(max_size=120),
    st.builds(lambda n, f, c: " ".join(p for p in (n, f, c) if p), NUMBERS, FLOWS, CALLER_IDS),
)


async def expected_call(bot: BotUnderTest, text: str) -> tuple[str, str, str] | None:
    """(E.164, flow id, region) if the rules allow dialling `text`, worked out independently of
    the listener: the parser, the dialling policy, the flow catalogue and the owned numbers."""
    services = bot.runtime.services
    assert services is not None
    try:
        parsed = parse_command(text)
    except CommandRejected:
        return None
    if not isinstance(parsed, CallArgs):
        return None
    try:
        number = check_dialable(parsed.number_text, services.policy.dial_policy)
        flow = await services.catalog.resolve_flow(parsed.flow_text)
        caller_id = services.policy.default_caller_id
        if parsed.caller_id_text:
            caller_id = to_e164(parsed.caller_id_text, services.policy.default_region)
        if caller_id is not None:
            await services.catalog.check_caller_id(caller_id)
    except CallbotError:
        return None
    return number.e164, flow.id, number.region


@pytest.fixture
def already_called() -> set[tuple[str, str]]:
    """(number, flow) pairs dialled so far by the examples of one test run."""
    return set()


@FIXTURE_SHARED
@given(text=COMMAND_TEXT)
@example(text="+18144043093 escalation")  # valid: dialled
@example(text="(814) 404-3093 Escalation")  # the same call again within a minute: asked
@example(text="+1 416 555 0123 escalation")  # valid, but abroad: asked
@example(text="+18144043093 escalation\n+18144043094 escalation")
async def test_arbitrary_call_texts_never_fail_and_dial_only_valid_requests(
    bot: BotUnderTest, already_called: set[tuple[str, str]], caplog: pytest.LogCaptureFixture,
    text: str,
) -> None:
    before = len(bot.evo.outgoing_posts)
    ack, _ = await bot.command(text)
    assert ack.status == 200
    assert "Something went wrong" not in ack.text
    await bot.settle()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    posts = bot.evo.outgoing_posts[before:]
    expected = await expected_call(bot, text)
    if expected is None:
        assert posts == [], f"dialled an invalid request: {text!r}"
        return
    e164, flow_id, region = expected
    if region != "US" or (e164, flow_id) in already_called:
        # Outside the home region, or the same call within a minute: asked, not dialled.
        assert posts == [], f"dialled without asking: {text!r}"
        return
    [post] = posts
    assert (post.json["numberToDial"], post.json["flowId"]) == (e164, flow_id)
    already_called.add((e164, flow_id))


@FIXTURE_SHARED
@given(channel_name=st.text(max_size=40), user_name=st.text(max_size=40),
       team_domain=st.text(max_size=40))
@example(channel_name="payload-incidents", user_name="manager", team_domain="test")
async def test_a_slash_command_is_answered_whatever_its_other_fields_say(
    http_bot: BotUnderTest, channel_name: str, user_name: str, team_domain: str
) -> None:
    """The fields Slack sends beside the text (the channel's and the user's names, the
    workspace's domain) are the workspace's to choose: none of them changes what the command
    is (Bolt once took any form holding "payload" for an interactive payload: a 404)."""
    body = slash_command_body(text="help", response_url=http_bot.slack.response_url(),
                              channel_name=channel_name, user_name=user_name,
                              team_domain=team_domain)
    ack = await http_bot.post_signed(body)
    assert ack.status == 200 and "/call" in ack.text


def _signed_interactive(payload: Any) -> bytes:
    import json
    import urllib.parse

    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


@FIXTURE_SHARED
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["type", "user", "id", "actions", "action_id",
                                           "value", "channel", "response_url", "team",
                                           "container", "view", "trigger_id"]), children,
                          max_size=6),
        max_leaves=20,
    ),
    action_type=st.sampled_from(["block_actions", "view_submission", "shortcut", "nonsense"]),
)
async def test_arbitrary_interactive_payloads_never_answer_500(
    http_bot: BotUnderTest, caplog: pytest.LogCaptureFixture, payload: Any, action_type: str
) -> None:
    if isinstance(payload, dict):
        payload = {"type": action_type, **payload}
    body = _signed_interactive(payload)
    async with http_bot.http.post(http_bot.events_url, data=body,
                                  headers=sign(body, SIGNING_SECRET, int(time.time()))) as r:
        answer = await r.text()
        assert r.status in (200, 400, 401, 404), (r.status, payload)
    assert "Something went wrong" not in answer, payload  # garbage is no bug of the bot's
    assert http_bot.evo.outgoing_posts == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["id", "channel_id", "value"]), children, max_size=3),
    max_leaves=8,
)


@FIXTURE_SHARED
@given(
    action_id=st.sampled_from(
        [CONFIRM_CALL_ACTION, CANCEL_CALL_ACTION, HANG_UP_ACTION, CALL_AGAIN_ACTION,
         STOP_ESCALATION_ACTION, ACK_ESCALATION_ACTION, HOME_CALL_ACTION, HOME_ESCALATE_ACTION]
    ),
    value=JSONISH, user=JSONISH, channel=JSONISH, container=JSONISH, response_url=JSONISH,
)
# A status message's button naming no clicker: nobody to check, nobody to tell.
@example(action_id=HANG_UP_ACTION, value="1", user=None, channel=None, container=None,
         response_url=None)
@example(action_id=CALL_AGAIN_ACTION, value="1", user={"id": ""}, channel=None, container=None,
         response_url=None)
# The escalation's buttons and the Home tab's likewise.
@example(action_id=STOP_ESCALATION_ACTION, value="1", user=None, channel=None, container=None,
         response_url=None)
@example(action_id=ACK_ESCALATION_ACTION, value="1:0", user={"id": ""}, channel=None,
         container=None, response_url=None)
@example(action_id=HOME_CALL_ACTION, value=None, user=None, channel=None, container=None,
         response_url=None)
async def test_forged_button_clicks_never_fail_and_never_dial(
    http_bot: BotUnderTest, caplog: pytest.LogCaptureFixture, action_id: str, value: Any,
    user: Any, channel: Any, container: Any, response_url: Any,
) -> None:
    """Signed clicks of our buttons with every field mangled (HTTP mode: a Socket Mode envelope
    comes from Slack itself over an authenticated connection)."""
    bot = http_bot
    payload = block_actions_payload(action_id=action_id, value="x")
    payload["actions"][0]["value"] = value
    payload.update(user=user, channel=channel, container=container, response_url=response_url)
    body = _signed_interactive(payload)
    async with bot.http.post(bot.events_url, data=body, headers=sign(body, SIGNING_SECRET)) as r:
        assert r.status in (200, 400, 404)
        assert "Something went wrong" not in await r.text()
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def _whose(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """The payload once for each way of naming no user (or no workspace) a forger may choose."""
    mangled = [("user", None), ("user", "U0MANAGER"), ("user", {"id": ""}), ("user", {"id": 7}),
               ("team", "T0TEAM")]
    return [(key, {**payload, key: value}) for key, value in mangled]


MESSAGE_SHORTCUT = message_shortcut_payload(
    callback_id=ESCALATE_MESSAGE_SHORTCUT_ID, message_ts="1700000000.000100",
    response_url="https://hooks.slack.com/actions/x",
)
FORMS_AND_SHORTCUTS = [
    *_whose(view_submission_payload(callback_id=CALL_FORM_CALLBACK_ID, values={})),
    *_whose(view_submission_payload(callback_id=ESCALATION_FORM_CALLBACK_ID, values={})),
    *_whose(global_shortcut_payload(callback_id=PLACE_CALL_SHORTCUT_ID)),
    *_whose(global_shortcut_payload(callback_id=ESCALATE_GLOBAL_SHORTCUT_ID)),
    *_whose(MESSAGE_SHORTCUT),
    # The call form's flow menu asking for options.
    *_whose(block_suggestion_payload(action_id=FormField.FLOW.value, value="esc")),
    # A message shortcut's message and channel, likewise.
    ("message", {**MESSAGE_SHORTCUT, "message": "1700000000.000100"}),
    ("channel", {**MESSAGE_SHORTCUT, "channel": "C0OPS"}),
]


def _form_id(mangled: str, payload: dict[str, Any]) -> str:
    name = payload.get("callback_id") or payload.get("action_id") or payload["view"]["callback_id"]
    return f"{payload['type']}-{name}-{mangled}"


@pytest.mark.parametrize(("mangled", "payload"), FORMS_AND_SHORTCUTS,
                         ids=[_form_id(k, p) for k, p in FORMS_AND_SHORTCUTS])
async def test_forged_forms_and_shortcuts_naming_no_user_never_fail_and_never_dial(
    http_bot: BotUnderTest, caplog: pytest.LogCaptureFixture, mangled: str,
    payload: dict[str, Any],
) -> None:
    """Signed forms, shortcuts and the flow menu's options whose user (or workspace) is missing or
    of the wrong shape: no listener fails on them (as the buttons' don't), nothing is dialled,
    nobody is told."""
    if "response_url" in payload:  # the stand-in's, not Slack's own hosts
        payload = {**payload, "response_url": http_bot.slack.response_url()}
    body = _signed_interactive(payload)
    async with http_bot.http.post(http_bot.events_url, data=body,
                                  headers=sign(body, SIGNING_SECRET)) as r:
        assert r.status == 200
        assert "Something went wrong" not in await r.text()
    await http_bot.settle()
    assert http_bot.evo.outgoing_posts == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []



COMMAND_TEXTS = ["+18144043093 escalation", "", "history", "oncall", "oncall take", "test", "help"]


@pytest.mark.parametrize("missing", ["user_id", "channel_id"])
@pytest.mark.parametrize("text", COMMAND_TEXTS)
async def test_a_command_naming_no_user_or_channel_never_fails_and_never_dials(
    http_bot: BotUnderTest, caplog: pytest.LogCaptureFixture, missing: str, text: str
) -> None:
    """A signed /call whose user or channel is missing or empty: answered, no listener failing
    on it; without a user, nothing dialled (without a channel the requester is told privately,
    as where the bot can't post)."""
    for value in (None, ""):
        payload = slash_command_payload(text=text, response_url=http_bot.slack.response_url(),
                                        trigger_id=http_bot.slack.new_trigger_id())
        if value is None:
            del payload[missing]
        else:
            payload[missing] = value
        ack = await http_bot.post_signed(urllib.parse.urlencode(payload).encode())
        assert ack.status == 200
        assert "Something went wrong" not in ack.text
    await http_bot.settle()
    if missing == "user_id":
        assert http_bot.evo.outgoing_posts == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
