"""The Slack stand-in speaks Slack's protocols: proven with the real slack_sdk / slack_bolt
clients."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.app import RateLimitRetry
from bot.calls import status_views as call_views
from bot.standins.slack import (
    ApiCall,
    ApiReply,
    SlackStandIn,
    block_actions_payload,
    block_suggestion_payload,
    global_shortcut_payload,
    interactive_body,
    message_shortcut_payload,
    sign,
    slash_command_body,
    slash_command_payload,
    view_submission_payload,
)
from bot.standins.slack.emoji import STANDARD_EMOJI

WAIT = 20.0  # generous: never a timing assertion, only an upper bound for a hang


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as standin:
        yield standin


def web_client(slack: SlackStandIn, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, **kwargs)


def new_app(slack: SlackStandIn) -> AsyncApp:
    return AsyncApp(client=web_client(slack))


@asynccontextmanager
async def socket_mode(
    slack: SlackStandIn, app: AsyncApp, *, ping_interval: float = 10
) -> AsyncIterator[AsyncSocketModeHandler]:
    handler = AsyncSocketModeHandler(app, slack.app_token, ping_interval=ping_interval)
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await slack.wait_connected(WAIT)
        yield handler
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        # let the cancelled client tasks finish before the loop closes
        for _ in range(3):
            await asyncio.sleep(0)


# ------------------------------------------------------------------------------------ Web API


async def test_auth_test(slack: SlackStandIn) -> None:
    client = web_client(slack)
    resp = await client.auth_test()
    assert resp["ok"] is True
    assert resp["user_id"] == "U0BOT"
    assert resp["team_id"] == "T0TEAM"
    assert resp["bot_id"] == "B0BOT"
    assert resp["url"] == "https://test.slack.com/"
    call = await slack.wait_for_call("auth.test")
    assert call.token == "xoxb-test"


async def test_post_thread_update_react_delete(slack: SlackStandIn) -> None:
    client = web_client(slack)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Calling* +1 814 404 3093"}}]
    parent = await client.chat_postMessage(channel="C0OPS", text="Calling…", blocks=blocks)
    ts = parent["ts"]
    assert parent["channel"] == "C0OPS"
    assert isinstance(ts, str) and ts.count(".") == 1
    assert parent["message"]["text"] == "Calling…"
    assert parent["message"]["bot_id"] == "B0BOT"

    reply1 = await client.chat_postMessage(channel="C0OPS", text="ringing", thread_ts=ts)
    reply2 = await client.chat_postMessage(channel="C0OPS", text="answered", thread_ts=ts)
    assert float(ts) < float(reply1["ts"]) < float(reply2["ts"])
    assert [m.text for m in slack.thread("C0OPS", ts)] == ["ringing", "answered"]
    assert [m.ts for m in slack.channel_messages("C0OPS")] == [ts]

    # a reply to a reply lands in the parent's thread, as in Slack
    await client.chat_postMessage(channel="C0OPS", text="nested", thread_ts=reply1["ts"])
    assert [m.text for m in slack.thread("C0OPS", ts)] == ["ringing", "answered", "nested"]

    # recorded with the token and with blocks decoded into Python objects
    call = slack.calls_to("chat.postMessage")[0]
    assert call.token == "xoxb-test"
    assert call.params["blocks"] == blocks
    assert call.params["channel"] == "C0OPS"
    assert "token" not in call.params

    new_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Call ended*"}}]
    updated = await client.chat_update(channel="C0OPS", ts=ts, text="Call ended", blocks=new_blocks)
    assert updated["ts"] == ts
    msg = slack.messages[("C0OPS", ts)]
    assert msg.text == "Call ended"
    assert msg.blocks == new_blocks
    assert [v["text"] for v in msg.versions] == ["Calling…", "Call ended"]
    assert msg.edits == 1

    link = await client.chat_getPermalink(channel="C0OPS", message_ts=ts)
    assert link["permalink"] == f"https://test.slack.com/archives/C0OPS/p{ts.replace('.', '')}"

    await client.reactions_add(channel="C0OPS", timestamp=ts, name="white_check_mark")
    assert msg.reactions == ["white_check_mark"]

    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C0OPS", ts="1.000000", text="x")
    assert err.value.response["error"] == "message_not_found"

    await client.chat_delete(channel="C0OPS", ts=reply2["ts"])
    assert ("C0OPS", reply2["ts"]) not in slack.messages
    assert [m.text for m in slack.thread("C0OPS", ts)] == ["ringing", "nested"]


async def test_a_reaction_must_be_an_emoji_slack_knows(slack: SlackStandIn) -> None:
    """reactions.add takes the standard emoji and the workspace's own; any other name is
    invalid_name, as Slack answers it."""
    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    ts = (await client.chat_postMessage(channel="C0OPS", text="Calling…"))["ts"]
    for name in ("no_such_emoji", "Phone", "white check mark", ""):
        with pytest.raises(SlackApiError) as err:
            await client.reactions_add(channel="C0OPS", timestamp=ts, name=name)
        assert err.value.response["error"] == "invalid_name", name
    slack.custom_emoji.add("pager-duty")
    for name in ("phone", ":x:", "pager-duty"):
        await client.reactions_add(channel="C0OPS", timestamp=ts, name=name)
    assert slack.messages[("C0OPS", ts)].reactions == ["phone", "x", "pager-duty"]


def test_the_bots_marks_are_emoji_slack_knows() -> None:
    # Every reaction the bot marks a call's parent with (status_views.parent_mark).
    marks = {value for name, value in vars(call_views).items() if name.startswith("MARK_")}
    assert marks == {"white_check_mark", "phone", "x", "warning"}
    assert marks <= STANDARD_EMOJI


async def test_form_encoded_calls_are_decoded(slack: SlackStandIn) -> None:
    """Form bodies (as e.g. api_call(data=...) sends them) are merged like JSON ones."""
    client = web_client(slack)
    blocks = [{"type": "divider"}]
    resp = await client.api_call(
        "chat.postMessage", data={"channel": "C0OPS", "text": "hi", "blocks": json.dumps(blocks)}
    )
    call = await slack.wait_for_call("chat.postMessage")
    assert call.content_type == "application/x-www-form-urlencoded"
    assert call.params["blocks"] == blocks
    assert slack.messages[("C0OPS", resp["ts"])].blocks == blocks


async def test_dm_to_user_id_answers_dm_channel(slack: SlackStandIn) -> None:
    client = web_client(slack)
    resp = await client.chat_postMessage(channel="U0MANAGER", text="hello")
    assert resp["channel"] == slack.dm_channel("U0MANAGER")
    assert resp["channel"].startswith("D")
    assert slack.messages[(resp["channel"], resp["ts"])].text == "hello"


async def test_ephemeral(slack: SlackStandIn) -> None:
    client = web_client(slack)
    resp = await client.chat_postEphemeral(channel="C0OPS", user="U0MANAGER", text="only you")
    assert resp["message_ts"]
    assert slack.ephemerals[0]["user"] == "U0MANAGER"
    assert slack.ephemerals[0]["text"] == "only you"


async def test_fail_not_in_channel_raises(slack: SlackStandIn) -> None:
    client = web_client(slack)
    slack.fail(
        "chat.postMessage", "not_in_channel", when=lambda c: c.params.get("channel") == "C0PRIV"
    )
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0PRIV", text="hello")
    assert err.value.response["error"] == "not_in_channel"
    assert not any(ch == "C0PRIV" for ch, _ in slack.messages)
    ok = await client.chat_postMessage(channel="C0OPS", text="hello")  # other channels unaffected
    assert ok["ok"] is True
    failed = slack.calls_to("chat.postMessage")[0]
    assert failed.response == {"ok": False, "error": "not_in_channel"}
    assert not failed.ok

    slack.fail("chat.postMessage", "channel_not_found", times=1)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0OPS", text="x")
    assert err.value.response["error"] == "channel_not_found"
    assert (await client.chat_postMessage(channel="C0OPS", text="x"))["ok"] is True


async def test_ratelimited_is_429_with_retry_after(slack: SlackStandIn) -> None:
    client = web_client(slack)
    slack.fail("chat.postMessage", "ratelimited", times=1)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0OPS", text="x")
    assert err.value.response.status_code == 429
    assert err.value.response["error"] == "ratelimited"
    assert err.value.response.headers["Retry-After"] == "1"
    assert slack.calls_to("chat.postMessage")[0].status == 429

    # slack_sdk's rate-limit retry handler (the bot's, which waits with a sleep of its choosing:
    # here none in real time) reads Retry-After (0 here, so that it waits only its jitter of under
    # a second) and retries: the second try succeeds
    slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=0)
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    retrying = web_client(slack, retry_handlers=[RateLimitRetry(max_retry_count=1, sleep=pause)])
    resp = await retrying.chat_postMessage(channel="C0OPS", text="after retry")
    assert resp["ok"] is True
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 429, 200]
    assert len(pauses) == 1 and 0 <= pauses[0] < 1


async def test_usergroups_and_users(slack: SlackStandIn) -> None:
    client = web_client(slack)
    slack.usergroups["S0ONCALL"] = ["U0ALICE", "U0BOB"]
    resp = await client.usergroups_users_list(usergroup="S0ONCALL")
    assert resp["users"] == ["U0ALICE", "U0BOB"]
    with pytest.raises(SlackApiError) as err:
        await client.usergroups_users_list(usergroup="S0NOPE")
    assert err.value.response["error"] == "no_such_subteam"

    default = await client.users_info(user="U0ANY")
    assert default["user"]["id"] == "U0ANY"
    assert default["user"]["tz"]
    slack.users["U0ALICE"] = {
        "real_name": "Alice",
        "tz": "Europe/Berlin",
        "profile": {"phone": "+49 30 1234567"},
    }
    alice = await client.users_info(user="U0ALICE")
    assert alice["user"]["real_name"] == "Alice"
    assert alice["user"]["tz"] == "Europe/Berlin"
    assert alice["user"]["profile"]["phone"] == "+49 30 1234567"
    profile = await client.users_profile_get(user="U0ALICE")
    assert profile["profile"]["phone"] == "+49 30 1234567"
    assert slack.calls_to("users.info")[0].http_method == "GET"

    slack.channels["C0PRIV"] = {"is_private": True, "is_member": False}
    info = await client.conversations_info(channel="C0PRIV")
    assert info["channel"]["is_member"] is False
    assert (await client.conversations_info(channel="C0OPS"))["channel"]["is_member"] is True


async def test_token_checks_and_unknown_method(slack: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(base_url=slack.api_url).auth_test()
    assert err.value.response["error"] == "not_authed"
    with pytest.raises(SlackApiError) as err:  # the app-level token is no bot token
        await AsyncWebClient(token=slack.app_token, base_url=slack.api_url).chat_postMessage(
            channel="C", text="x"
        )
    assert err.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as err:  # and apps.connections.open wants the app-level token
        await web_client(slack).apps_connections_open(app_token=slack.bot_token)
    assert err.value.response["error"] == "not_allowed_token_type"
    opened = await web_client(slack).apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith(f"{slack.ws_url}?ticket=")
    with pytest.raises(SlackApiError) as err:
        await web_client(slack).api_call("chat.frobnicate")
    assert err.value.response["error"] == "unknown_method"


async def test_on_override(slack: SlackStandIn) -> None:
    client = web_client(slack)
    seen: list[ApiCall] = []

    async def observe(call: ApiCall) -> None:
        seen.append(call)
        return None  # fall through to the default

    slack.on("chat.postMessage", observe)
    resp = await client.chat_postMessage(channel="C0OPS", text="x")
    assert resp["ts"] and seen[0].params["text"] == "x"

    slack.on(
        "conversations.info",
        lambda call: {"ok": True, "channel": {"id": call["channel"], "name": "custom"}},
    )
    assert (await client.conversations_info(channel="C1"))["channel"]["name"] == "custom"

    slack.on(
        "chat.scheduleMessage",
        lambda call: ApiReply({"ok": False, "error": "fatal_error"}, status=500),
    )
    with pytest.raises(SlackApiError) as err:
        await client.chat_scheduleMessage(channel="C0OPS", text="x", post_at=1)
    assert err.value.response.status_code == 500

    slack.off("conversations.info")
    assert (await client.conversations_info(channel="C1"))["channel"]["name"] == "c1"


async def test_views(slack: SlackStandIn) -> None:
    client = web_client(slack)
    view = {
        "type": "modal",
        "callback_id": "place_call",
        "title": {"type": "plain_text", "text": "Place a call"},
        "submit": {"type": "plain_text", "text": "Call"},
        "blocks": [
            {
                "type": "input",
                "block_id": "num",
                "label": {"type": "plain_text", "text": "Number"},
                "element": {"type": "plain_text_input", "action_id": "v"},
            }
        ],
    }
    opened = await client.views_open(trigger_id=slack.new_trigger_id(), view=view)
    view_id = opened["view"]["id"]
    assert view_id.startswith("V")
    assert opened["view"]["hash"]
    assert opened["view"]["callback_id"] == "place_call"
    assert slack.views[view_id].versions == [view]

    updated = await client.views_update(
        view_id=view_id, view={**view, "private_metadata": "x"}, hash=opened["view"]["hash"]
    )
    assert updated["view"]["private_metadata"] == "x"
    assert len(slack.views[view_id].versions) == 2
    with pytest.raises(SlackApiError) as err:  # stale hash
        await client.views_update(view_id=view_id, view=view, hash=opened["view"]["hash"])
    assert err.value.response["error"] == "hash_conflict"
    with pytest.raises(SlackApiError) as err:
        await client.views_update(view_id="V0UNKNOWN", view=view)
    assert err.value.response["error"] == "not_found"
    pushed = await client.views_push(trigger_id=slack.new_trigger_id(), view=view)
    assert pushed["view"]["id"] != view_id

    # Slack's limits: title <= 24 characters, input blocks need a submit button
    with pytest.raises(SlackApiError) as err:
        await client.views_open(
            trigger_id="1.2.3", view={**view, "title": {"type": "plain_text", "text": "x" * 25}}
        )
    assert err.value.response["error"] == "invalid_arguments"
    assert "title" in err.value.response["response_metadata"]["messages"][0]
    with pytest.raises(SlackApiError) as err:
        await client.views_open(
            trigger_id="1.2.3", view={k: v for k, v in view.items() if k != "submit"}
        )
    assert err.value.response["error"] == "invalid_arguments"

    # a menu's initial_option must be one of its options (radio buttons and groups alike)
    def menu(initial: dict[str, Any], grouped: bool = False) -> dict[str, Any]:
        options = [{"text": {"type": "plain_text", "text": t}, "value": t} for t in ("a", "b")]
        element: dict[str, Any] = {"type": "static_select", "action_id": "v",
                                   "initial_option": initial}
        if grouped:
            element["option_groups"] = [{"label": {"type": "plain_text", "text": "g"},
                                         "options": options}]
        else:
            element["options"] = options
        return {**view, "blocks": [{**view["blocks"][0], "element": element}]}

    offered = {"text": {"type": "plain_text", "text": "b"}, "value": "b"}
    for grouped in (False, True):
        await client.views_open(trigger_id=slack.new_trigger_id(), view=menu(offered, grouped))
        with pytest.raises(SlackApiError) as err:
            await client.views_open(trigger_id=slack.new_trigger_id(),
                                    view=menu({**offered, "value": "c"}, grouped))
        assert err.value.response["error"] == "invalid_arguments"
        assert "initial_option" in err.value.response["response_metadata"]["messages"][0]

    # a text input prefilled beyond its max_length: opened, updated or pushed, refused
    def prefilled(text: str) -> dict[str, Any]:
        element = {"type": "plain_text_input", "action_id": "v", "max_length": 5,
                   "initial_value": text}
        return {**view, "blocks": [{**view["blocks"][0], "element": element}]}

    fits = await client.views_open(trigger_id=slack.new_trigger_id(), view=prefilled("12345"))
    for method, where in ((client.views_open, {"trigger_id": slack.new_trigger_id()}),
                          (client.views_push, {"trigger_id": slack.new_trigger_id()}),
                          (client.views_update, {"view_id": fits["view"]["id"]})):
        with pytest.raises(SlackApiError) as err:
            await method(view=prefilled("123456"), **where)
        assert err.value.response["error"] == "invalid_arguments"
        assert err.value.response["response_metadata"]["messages"] == [
            "[ERROR] must be less than 6 characters"
            " [json-pointer:/view/blocks/0/element/initial_value]"]
    assert len(slack.views[fits["view"]["id"]].versions) == 1

    # a minted trigger_id works once; one Slack never handed out, not at all
    trigger = slack.new_trigger_id()
    await client.views_open(trigger_id=trigger, view=view)
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id=trigger, view=view)
    assert err.value.response["error"] == "exchanged_trigger_id"
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id="123.456.abc", view=view)
    assert err.value.response["error"] == "invalid_trigger_id"

    # a view's external_id names one view of the workspace, found by views.update
    named = await client.views_open(trigger_id=slack.new_trigger_id(),
                                    view={**view, "external_id": "loading-1"})
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id=slack.new_trigger_id(),
                                view={**view, "external_id": "loading-1"})
    assert err.value.response["error"] == "duplicate_external_id"
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id=slack.new_trigger_id(),
                                view={**view, "external_id": "x" * 256})
    assert err.value.response["error"] == "invalid_arguments"
    await client.views_update(external_id="loading-1", view={**view, "external_id": "loading-1"})
    assert len(slack.views[named["view"]["id"]].versions) == 2
    with pytest.raises(SlackApiError) as err:
        await client.views_update(external_id="loading-2", view=view)
    assert err.value.response["error"] == "not_found"


async def test_wait_for_call_future_and_timeout_dump(slack: SlackStandIn) -> None:
    client = web_client(slack)
    waiter = asyncio.create_task(
        slack.wait_for_call(
            "chat.postMessage", lambda c: c.params.get("text") == "second", timeout=WAIT
        )
    )
    await client.chat_postMessage(channel="C0OPS", text="first")
    await client.chat_postMessage(channel="C0OPS", text="second")
    call = await waiter
    assert call.params["text"] == "second"
    assert call.response is not None and call.response["ok"] is True
    assert ("C0OPS", call.response["ts"]) in slack.messages  # state already updated

    with pytest.raises(AssertionError) as err:
        await slack.wait_for_call("chat.update", timeout=0.05)
    assert "chat.update" in str(err.value) and "chat.postMessage" in str(err.value)


# ------------------------------------------------------------------------------------ response_url


async def test_response_url(slack: SlackStandIn) -> None:
    url = slack.response_url()
    other = slack.response_url()
    assert url != other and url.startswith(f"http://127.0.0.1:{slack.port}/response/")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, json={"text": "Calling…", "response_type": "ephemeral"}
        ) as resp:
            assert resp.status == 200
            assert await resp.text() == "ok"
    # bolt's respond() goes through slack_sdk's AsyncWebhookClient
    webhook = await AsyncWebhookClient(url).send(text="Call placed", replace_original=True)
    assert webhook.status_code == 200
    got = await slack.wait_for_response(url, n=2, timeout=WAIT)
    assert got == [
        {"text": "Calling…", "response_type": "ephemeral"},
        {"text": "Call placed", "replace_original": True},
    ]
    assert slack.responses_to(other) == []

    slack.expire_response_url(url)
    expired = await AsyncWebhookClient(url).send(text="too late")
    assert (expired.status_code, expired.body) == (404, "expired_url")
    assert len(slack.responses_to(url)) == 2

    # ... and by itself 30 minutes after Slack minted it
    now = [0.0]
    slack.response_url_clock = lambda: now[0]
    lasting = slack.response_url()
    now[0] = 30 * 60
    assert (await AsyncWebhookClient(lasting).send(text="in time")).status_code == 200
    now[0] += 1
    late = await AsyncWebhookClient(lasting).send(text="too late")
    assert (late.status_code, late.body) == (404, "expired_url")

    # at most 5 posts per response_url
    for i in range(5):
        assert (await AsyncWebhookClient(other).send(text=str(i))).status_code == 200
    sixth = await AsyncWebhookClient(other).send(text="6")
    assert (sixth.status_code, sixth.body) == (404, "used_url")

    with pytest.raises(AssertionError):
        await slack.wait_for_response(other, n=6, timeout=0.05)


async def test_a_cut_call_is_carried_out_and_its_answer_never_comes(slack: SlackStandIn) -> None:
    # A network or a proxy failing mid-answer: Slack did it, the client hears a closed connection.
    slack.cut("chat.postMessage")
    async with aiohttp.ClientSession() as session:
        client = web_client(slack, session=session, retry_handlers=[])
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.chat_postMessage(channel="C1", text="posted")
        assert [m.text for m in slack.channel_messages("C1")] == ["posted"]
        await client.chat_postMessage(channel="C1", text="answered")  # the next one is answered
    url = slack.response_url()
    slack.cut_responses(when=lambda body: body.get("text") == "shown")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await AsyncWebhookClient(url, session=session, retry_handlers=[]).send(text="shown")
    assert slack.responses_to(url) == [{"text": "shown"}]


# ------------------------------------------------------------------------------------ Socket Mode


async def test_socket_mode_slash_command_end_to_end(slack: SlackStandIn) -> None:
    app = new_app(slack)
    done = asyncio.Event()

    @app.command("/call")
    async def call_command(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack(f"Calling {command['text']}…")
        parent = await client.chat_postMessage(
            channel=command["channel_id"], text=f"Call to {command['text']}"
        )
        await client.chat_postMessage(
            channel=command["channel_id"], thread_ts=parent["ts"], text="ringing"
        )
        await respond("placed")
        done.set()

    async with socket_mode(slack, app):
        opened = slack.calls_to("apps.connections.open")
        assert len(opened) == 1 and opened[0].token == "xapp-test"
        assert slack.socket_connections == 1

        url = slack.response_url()
        ack = await slack.send_envelope(
            "slash_commands",
            slash_command_payload(text="+1 814 404 3093", response_url=url),
            timeout=WAIT,
        )
        assert ack["payload"] == {"text": "Calling +1 814 404 3093…"}
        assert isinstance(ack["envelope_id"], str)
        await asyncio.wait_for(done.wait(), WAIT)

        auth = await slack.wait_for_call("auth.test", timeout=WAIT)
        assert auth.token == "xoxb-test"
        parent_call = await slack.wait_for_call(
            "chat.postMessage", lambda c: "thread_ts" not in c.params, timeout=WAIT
        )
        assert parent_call.response is not None
        parent_ts = parent_call.response["ts"]
        assert [m.text for m in slack.thread("C0OPS", parent_ts)] == ["ringing"]
        assert await slack.wait_for_response(url, timeout=WAIT) == [{"text": "placed"}]


async def test_socket_mode_hello_message_shape(slack: SlackStandIn) -> None:
    """What a client sees first: a raw websocket client against ws_url."""
    client = web_client(slack)
    url = (await client.apps_connections_open(app_token=slack.app_token))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=WAIT)
            assert hello["type"] == "hello"
            assert hello["num_connections"] == 1
            assert hello["connection_info"] == {"app_id": "A0APP"}
            assert "debug_info" in hello
            await slack.wait_connected(WAIT)
            sender = asyncio.create_task(
                slack.send_envelope("events_api", {"event": {"type": "x"}}, timeout=WAIT)
            )
            envelope = await ws.receive_json(timeout=WAIT)
            assert envelope["type"] == "events_api"
            assert envelope["accepts_response_payload"] is True
            assert envelope["payload"] == {"event": {"type": "x"}}
            await ws.send_json({"envelope_id": envelope["envelope_id"]})
            assert await sender == {"envelope_id": envelope["envelope_id"]}


async def test_socket_mode_acks_slack_would_refuse_fail(slack: SlackStandIn) -> None:
    """An ack more than 3 s late, or one an interactive payload can't use (Deadlines)."""
    client = web_client(slack)
    url = (await client.apps_connections_open(app_token=slack.app_token))["url"]
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive_json(timeout=WAIT)  # hello
        late = await slack.post_envelope("slash_commands", {"command": "/call"}, timeout=WAIT)
        await ws.receive_json(timeout=WAIT)
        slack.envelopes[late].sent_at -= 4  # as if it had waited 4 s: no real wait
        await ws.send_json({"envelope_id": late})
        with pytest.raises(AssertionError, match="gave up"):
            await slack.wait_for_ack(late, timeout=WAIT)

        suggestion = block_suggestion_payload(action_id="flow", value="esc")
        unusable = await slack.post_envelope("interactive", suggestion, timeout=WAIT)
        await ws.receive_json(timeout=WAIT)
        option = {"text": {"type": "plain_text", "text": "Escalation"}, "value": "flow-esc"}
        await ws.send_json({"envelope_id": unusable, "payload": {"options": [option] * 101}})
        with pytest.raises(AssertionError, match="refuses this ack"):
            await slack.wait_for_ack(unusable, timeout=WAIT)


async def test_socket_mode_200_concurrent_envelopes(slack: SlackStandIn) -> None:
    app = new_app(slack)
    finished: list[str] = []
    all_finished = asyncio.Event()
    all_acked = asyncio.Event()

    @app.command("/call")
    async def call_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack(f"ack {command['text']}")
        # Slow work after the ack must not hold other acks back: none ends before all are acked.
        await all_acked.wait()
        finished.append(command["text"])
        if len(finished) == 200:
            all_finished.set()

    async with socket_mode(slack, app):
        url = slack.response_url()
        acks = await asyncio.gather(
            *(
                slack.send_envelope(
                    "slash_commands",
                    slash_command_payload(text=str(i), response_url=url),
                    timeout=WAIT,
                )
                for i in range(200)
            )
        )
        assert sorted(a["payload"]["text"] for a in acks) == sorted(f"ack {i}" for i in range(200))
        assert len({a["envelope_id"] for a in acks}) == 200
        assert all(r.ack is not None and r.acked_at is not None for r in slack.envelopes.values())
        assert finished == []
        all_acked.set()
        await asyncio.wait_for(all_finished.wait(), WAIT)  # let the listeners finish before closing


async def test_socket_mode_reconnects_after_server_close(slack: SlackStandIn) -> None:
    app = new_app(slack)

    @app.command("/call")
    async def call_command(ack: AsyncAck) -> None:
        await ack("ok")

    async with socket_mode(slack, app):
        url = slack.response_url()
        assert (
            await slack.send_envelope(
                "slash_commands", slash_command_payload(text="1", response_url=url), timeout=WAIT
            )
        )["payload"] == {"text": "ok"}

        await slack.disconnect_socket()
        await slack.wait_socket_connections(2, timeout=WAIT)
        assert len(slack.calls_to("apps.connections.open")) >= 2  # a fresh URL for every reconnect
        ack = await slack.send_envelope(
            "slash_commands", slash_command_payload(text="2", response_url=url), timeout=WAIT
        )
        assert ack["payload"] == {"text": "ok"}
        assert slack.envelopes[ack["envelope_id"]].connection >= 2

        # Slack's own "disconnect" message (before a connection refresh) also makes it reconnect
        before = slack.socket_connections
        await slack.send_disconnect_message("refresh_requested")
        await slack.wait_socket_connections(before + 1, timeout=WAIT)
        ack = await slack.send_envelope(
            "slash_commands", slash_command_payload(text="3", response_url=url), timeout=WAIT
        )
        assert ack["payload"] == {"text": "ok"}


async def test_socket_mode_reconnects_after_abrupt_drop(slack: SlackStandIn) -> None:
    app = new_app(slack)

    @app.command("/call")
    async def call_command(ack: AsyncAck) -> None:
        await ack("ok")

    # Detection takes up to ping_interval. Not much lower: slack_sdk passes heartbeat=ping_interval
    # to aiohttp, which drops the connection if no pong comes within ping_interval / 2 (here only
    # a connection quiet for half a second is pinged: the new one is used at once).
    async with socket_mode(slack, app, ping_interval=0.5):
        await slack.disconnect_socket(abrupt=True)
        await slack.wait_socket_connections(2, timeout=WAIT)
        url = slack.response_url()
        ack = await slack.send_envelope(
            "slash_commands", slash_command_payload(text="x", response_url=url), timeout=WAIT
        )
        assert ack["payload"] == {"text": "ok"}


async def test_socket_mode_interactive_payloads_route_in_bolt(slack: SlackStandIn) -> None:
    app = new_app(slack)
    seen: dict[str, Any] = {}

    @app.shortcut("global_call")
    async def global_shortcut(ack: AsyncAck, body: dict[str, Any]) -> None:
        seen["shortcut"] = body
        await ack()

    @app.shortcut("call_about_message")
    async def message_shortcut(ack: AsyncAck, body: dict[str, Any]) -> None:
        seen["message_action"] = body
        await ack()

    @app.view("place_call")
    async def submission(ack: AsyncAck, view: dict[str, Any]) -> None:
        number = view["state"]["values"]["num"]["v"]["value"]
        if not number.startswith("+"):
            await ack(response_action="errors", errors={"num": "Use +E.164"})
            return
        await ack()

    @app.action("hang_up")
    async def hang_up(ack: AsyncAck, body: dict[str, Any]) -> None:
        seen["block_actions"] = body
        await ack()

    @app.options("pick_user")
    async def options(ack: AsyncAck, payload: dict[str, Any]) -> None:
        await ack(
            options=[{"text": {"type": "plain_text", "text": payload["value"]}, "value": "U1"}]
        )

    async with socket_mode(slack, app):
        url = slack.response_url()
        ack = await slack.send_envelope(
            "interactive", global_shortcut_payload(callback_id="global_call"), timeout=WAIT
        )
        assert "payload" not in ack
        assert seen["shortcut"]["type"] == "shortcut"

        target = slack.add_message("C0OPS", "call me at +1 814 404 3093", user="U0SOMEONE")
        await slack.send_envelope(
            "interactive",
            message_shortcut_payload(
                callback_id="call_about_message",
                message_ts=target.ts,
                message_text=target.text or "",
                response_url=url,
            ),
            timeout=WAIT,
        )
        assert seen["message_action"]["message"]["ts"] == target.ts

        # Slack sends the submitted view with its blocks: an error names one of its inputs.
        form = {"blocks": [{
            "type": "input", "block_id": "num", "label": {"type": "plain_text", "text": "Number"},
            "element": {"type": "plain_text_input", "action_id": "v"},
        }]}
        bad = view_submission_payload(
            callback_id="place_call", view=form,
            values={"num": {"v": {"type": "plain_text_input", "value": "123"}}},
        )
        ack = await slack.send_envelope("interactive", bad, timeout=WAIT)
        assert ack["payload"] == {"response_action": "errors", "errors": {"num": "Use +E.164"}}
        good = view_submission_payload(
            callback_id="place_call",
            values={"num": {"v": {"type": "plain_text_input", "value": "+1"}}},
        )
        ack = await slack.send_envelope("interactive", good, timeout=WAIT)
        assert "payload" not in ack

        await slack.send_envelope(
            "interactive",
            block_actions_payload(action_id="hang_up", value="call-1", response_url=url),
            timeout=WAIT,
        )
        assert seen["block_actions"]["actions"][0]["value"] == "call-1"

        ack = await slack.send_envelope(
            "interactive",
            block_suggestion_payload(action_id="pick_user", value="ali"),
            timeout=WAIT,
        )
        assert ack["payload"]["options"][0]["text"]["text"] == "ali"

        # an unhandled request gets no ack from bolt: send_envelope times out with a hint
        with pytest.raises(AssertionError) as err:
            await slack.send_envelope(
                "interactive", global_shortcut_payload(callback_id="nobody"), timeout=0.5
            )
        assert "no ack" in str(err.value).lower()


async def test_stop_while_connected_fails_pending_acks() -> None:
    slack = SlackStandIn()
    await slack.start()
    app = new_app(slack)
    handler = AsyncSocketModeHandler(app, slack.app_token)
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await slack.wait_connected(WAIT)
        # nobody listens for this shortcut, so bolt never acks it
        pending = asyncio.create_task(
            slack.send_envelope(
                "interactive", global_shortcut_payload(callback_id="nobody"), timeout=WAIT
            )
        )
        while not slack.envelopes:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(slack.stop(), WAIT)
        with pytest.raises(AssertionError, match="stopped"):
            await pending
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await slack.stop()
        for _ in range(3):
            await asyncio.sleep(0)


async def test_a_client_whose_socket_stop_closed_finds_nothing_to_connect_again_to() -> None:
    # A Socket Mode client connects again as soon as its websocket is closed. Were the stand-in
    # still listening then, that connection would be accepted as aiohttp shuts down and hold
    # stop() for the server's whole shutdown_timeout (5 s), its first request never read.
    slack = SlackStandIn()
    await slack.start()
    stopping: asyncio.Task[None] | None = None
    async with aiohttp.ClientSession() as http, http.ws_connect(slack.ws_url) as ws:
        try:
            assert json.loads((await ws.receive(WAIT)).data)["type"] == "hello"
            stopping = asyncio.create_task(slack.stop())
            closing = await ws.receive(WAIT)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
            with pytest.raises(ConnectionRefusedError):
                _, writer = await asyncio.open_connection("127.0.0.1", slack.port)
                writer.close()
        finally:
            await ws.close()
            await asyncio.wait_for(stopping or slack.stop(), WAIT)


# ------------------------------------------------------------------------------------ HTTP mode


def test_sign_matches_slack_sdk_verifier() -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    body = slash_command_body(text="+1 814 404 3093", response_url="http://127.0.0.1:1/response/x")
    headers = sign(body, secret)
    verifier = SignatureVerifier(secret)
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    # an old timestamp is signed correctly but rejected by the verifier (older than 5 minutes)
    old = sign(body, secret, timestamp=1_600_000_000)
    assert old["X-Slack-Request-Timestamp"] == "1600000000"
    assert not verifier.is_valid(body, old["X-Slack-Request-Timestamp"], old["X-Slack-Signature"])

    fields = dict(urllib.parse.parse_qsl(body.decode()))
    assert set(fields) == {
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    }
    assert fields == slash_command_payload(
        text="+1 814 404 3093", response_url="http://127.0.0.1:1/response/x"
    )
    assert interactive_body({"a": 1}) == b"payload=%7B%22a%22%3A+1%7D"


async def test_http_mode_signed_requests_reach_bolt(slack: SlackStandIn) -> None:
    secret = "s3cr3t"
    app = AsyncApp(client=web_client(slack), signing_secret=secret)

    @app.command("/call")
    async def call_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack(f"Calling {command['text']}")

    @app.shortcut("global_call")
    async def shortcut(ack: AsyncAck) -> None:
        await ack()

    runner = web.AppRunner(app.web_app(path="/slack/events"), access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/slack/events"
    try:
        async with aiohttp.ClientSession() as session:
            body = slash_command_body(text="+1 814 404 3093", response_url=slack.response_url())
            async with session.post(endpoint, data=body, headers=sign(body, secret)) as resp:
                assert resp.status == 200
                assert await resp.text() == "Calling +1 814 404 3093"
            async with session.post(endpoint, data=body, headers=sign(body, "wrong")) as resp:
                assert resp.status == 401
            ibody = interactive_body(global_shortcut_payload(callback_id="global_call"))
            async with session.post(endpoint, data=ibody, headers=sign(ibody, secret)) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
