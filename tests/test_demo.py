"""`callbot demo` without a browser: the command, the page's API, the sample world's rotation."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import load_policy
from bot.demo.screenshot import set_scene
from bot.demo.web import Demo
from bot.demo.world import CHANNEL, YOU, sample_policy_path
from tests.processes import port_no_other_socket_takes, with_one_ca_certificate


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the demo never got there")
        await asyncio.sleep(0.05)


def thread_text(demo: Demo, parent_ts: str) -> str:
    replies = demo.world.slack.thread(CHANNEL, parent_ts)
    return "\n".join(str(m.text) for m in replies)


async def test_callbot_demo_serves_the_page_on_the_port_it_prints(tmp_path: Path) -> None:
    """…and talks to its stand-ins directly, though a proxy is set as in many offices: the Slack
    SDK sends through HTTP(S)_PROXY whatever NO_PROXY says, which would take the demo's requests
    off the machine (and leave the demo unable to start)."""
    env = with_one_ca_certificate({k: v for k, v in os.environ.items()
                                   if not k.startswith(("SLACK_", "EVOVOICE_", "CALLBOT_",
                                                        "DATABASE_"))})
    port = port_no_other_socket_takes()  # PORT, not the default, is used
    env["PORT"] = str(port)  # no --port: PORT decides
    proxied: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxied.append((await reader.readline()).decode(errors="replace"))
        writer.close()

    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env[name] = proxy_url
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "demo", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match and match.group(1) == str(port), line
        assert "no credentials" in line
        async with aiohttp.ClientSession() as http:
            async with http.get(match.group(0)) as response:
                assert response.status == 200
                page = await response.text()
                assert "callbot demo" in page
                assert 'data-poll-ms="500"' in page  # a person sees a change within 0.5 s
            async with http.get(match.group(0) + "api/state") as response:
                state = await response.json()
            assert state["channel"]["name"] == "ops" and state["messages"] == []
            async with http.post(match.group(0) + "api/say",
                                 json={"text": "/call +1 814 404 3093 page"}) as response:
                assert response.status == 200
            while not state["phones"]:  # the call reached the Evo Voice stand-in
                async with http.get(match.group(0) + "api/state") as response:
                    state = await response.json()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
        proxy_server.close()
    assert process.returncode == 0
    assert proxied == []
    assert list(tmp_path.iterdir()) == [], "the demo keeps its database in a temporary directory"


async def test_the_page_api_turns_bad_requests_away(demo: Demo) -> None:
    async with aiohttp.ClientSession() as http:
        for name, body in [("say", b"not json"), ("say", b"[1]"), ("phone", b'{"session_id": "x"}'),
                           ("phone", b'{"session_id": "nope", "action": "answer"}'),
                           ("shortcut", b'{"callback_id": "rm -rf"}'),
                           ("escalate", b'{"channel": "C0OPS", "ts": "1.2"}'),
                           ("dismiss", b'{"id": 1e400}')]:
            async with http.post(demo.url + "api/" + name, data=body,
                                 headers={"Content-Type": "application/json"}) as response:
                assert response.status == 400, (name, body)
                assert "error" in await response.json()
        # A form's values are {block_id: {action_id: {…}}}: anything else is turned away too.
        await demo.world.say("/call")
        form = await demo.world.form_opened()
        for values in ({"call_form.number": "+18144043093"}, {"call_form.number": {"n": "x"}}):
            body = json.dumps({"view_id": form.view_id, "values": values}).encode()
            async with http.post(demo.url + "api/submit", data=body,
                                 headers={"Content-Type": "application/json"}) as response:
                assert response.status == 400, values
        assert demo.world.forms == [form]
        demo.world.close(form.view_id)
        # Slack's other commands are not the demo's: it says so.
        await demo.world.say("/remind me in 5 minutes")
        assert "This demo knows one command: /call (not /remind)" in str(
            demo.world.state()["ephemerals"])
        # A phone that rings does only what a person can do with it.
        await demo.world.say("/call +1 814 404 3093 page")
        [phone] = await eventually(lambda: demo.world.state()["phones"])
        body = json.dumps({"session_id": phone["session_id"], "action": "explode"}).encode()
        async with http.post(demo.url + "api/phone", data=body,
                             headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
        [phone] = demo.world.state()["phones"]
        assert phone["state"] == "ringing"
        # A call that is over can't be answered.
        demo.world.phone(phone["session_id"], "decline")
        body = json.dumps({"session_id": phone["session_id"], "action": "answer"}).encode()
        async with http.post(demo.url + "api/phone", data=body,
                             headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "that call is over"
        [phone] = demo.world.state()["phones"]
        assert phone["state"] == "ended"


async def test_a_voicemail_is_forgotten_once_its_call_is_over(demo: Demo) -> None:
    """A demo left running holds nothing for the voicemails it played: each leaves when its call
    ends, by itself or hung up first."""
    phones = demo.world.phones
    phones.voicemail_seconds = 0.2
    await demo.world.say("/call +1 814 404 3093 page")
    [phone] = await eventually(lambda: demo.world.state()["phones"])
    demo.world.phone(phone["session_id"], "voicemail")
    assert phones.voicemails_recording == 1
    await eventually(lambda: demo.world.state()["phones"][0]["state"] == "ended")
    assert demo.world.state()["phones"][0]["outcome"] == "Voicemail"
    assert phones.voicemails_recording == 0
    # Hung up while the voicemail records: its timer goes with the call.
    await demo.world.say("/call +1 814 404 3094 page")
    ringing = await eventually(lambda: [p for p in demo.world.state()["phones"]
                                        if p["state"] == "ringing"])
    phones.voicemail_seconds = 60.0
    demo.world.phone(ringing[0]["session_id"], "voicemail")
    assert phones.voicemails_recording == 1
    demo.world.phone(ringing[0]["session_id"], "hangup")
    assert phones.voicemails_recording == 0


async def test_the_demo_reaches_nothing_beyond_this_machine(demo: Demo) -> None:
    runtime = demo.world.runtime
    assert runtime is not None
    settings = runtime.settings
    for url in (settings.slack_api_url, settings.evovoice_url, demo.url):
        assert url.startswith("http://127.0.0.1:"), url
    assert settings.socket_mode  # the websocket too is the stand-in's, on the loopback
    # The page is served on the loopback only: nobody else on the network can drive it.
    assert demo.hosts == {"127.0.0.1"}
    # Nor reach the bot's own probes and metrics (PORT), or the stand-ins the bot talks to.
    assert runtime.port is not None
    bot_hosts = {str(address[0]) for address in runtime.addresses}
    assert bot_hosts == {"127.0.0.1"}, bot_hosts
    for url in (demo.world.slack.base_url, demo.world.evo.url):
        assert url.startswith("http://127.0.0.1:"), url


async def test_the_screenshots_scene_is_set_through_the_demo(demo: Demo) -> None:
    """`make screenshot` photographs this scene: a call answered, an escalation ringing."""
    await set_scene(demo)
    states = sorted(p["state"] for p in demo.world.state()["phones"])
    assert states == ["connected", "ringing"]
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "](docs/demo.png)" in readme
    assert (Path(__file__).parent.parent / "docs" / "demo.png").stat().st_size > 10_000
    assert "bot.demo.screenshot docs/demo.png" in (
        Path(__file__).parent.parent / "Makefile").read_text()


async def test_the_sample_rotation_skips_the_person_without_a_number(demo: Demo) -> None:
    """Three people on call, Carol with no number anywhere: declined calls move the chain on."""
    world = demo.world
    policy = load_policy(sample_policy_path())
    assert policy.oncall is not None and len(policy.oncall.rotation) == 3
    assert "U0CAROL" not in policy.people

    await world.say("the checkout is down")
    [message] = world.slack.channel_messages(CHANNEL)
    await world.escalate(CHANNEL, message.ts)
    form = await world.form_opened()
    view = world.slack.views[form.view_id].view
    values = {b["block_id"]: {b["element"]["action_id"]: {
        "type": b["element"]["type"], "value": b["element"].get("initial_value")}}
        for b in view["blocks"] if b["type"] == "input"}
    await world.submit(form.view_id, values)
    assert world.forms == []

    declined: set[str] = set()
    while "Nobody acknowledged" not in thread_text(demo, message.ts):
        ringing = await eventually(lambda: [
            p for p in world.state()["phones"]
            if p["state"] == "ringing" and p["session_id"] not in declined
        ] or "Nobody acknowledged" in thread_text(demo, message.ts))
        if ringing is True:
            break
        for phone in ringing:
            world.phone(phone["session_id"], "decline")
            declined.add(phone["session_id"])
    text = thread_text(demo, message.ts)
    assert "<@U0CAROL> — ⏭ skipped: no usable phone number" in text
    # Alice and Bob from [people], you from your Slack profile; Carol never rang.
    dialled = {post.json["numberToDial"] for post in world.evo.outgoing_posts}
    assert dialled == {"+18144043093", "+18144043094", "+18144043095"}
    assert f"<@{YOU}>" in text


async def test_the_demo_takes_no_setting_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell set up for the real bot (a rehearsal's EVOVOICE_MODE=simulate exported, a setting
    the demo would find out of range) changes nothing: the demo's phones ring, its bot starts."""
    monkeypatch.setenv("EVOVOICE_MODE", "simulate")
    monkeypatch.setenv("LEASE_SECONDS", "1")  # out of range: the real bot would refuse to start
    monkeypatch.setenv("EVOVOICE_OTHER_URL", "https://evovoice.io")
    demo = Demo(0, tmp_path, poll_seconds=(0.05, 0.2))
    await demo.start()
    try:
        assert demo.world.runtime is not None and demo.world.runtime.simulator is None
        await demo.world.say("/call +1 814 404 3093 page")
        [phone] = await eventually(lambda: demo.world.state()["phones"])
        assert phone["flow"] == "Escalation"
        # The phone rings first: the channel's message may follow it.
        [message] = await eventually(lambda: demo.world.slack.channel_messages(CHANNEL))
        assert "EVOVOICE_MODE" not in str(message.text)
    finally:
        await demo.stop()


async def test_a_demo_phone_nobody_picks_up_stops_ringing(tmp_path: Path) -> None:
    """As a real phone does: a call left ringing ends unanswered, and its status says so, rather
    than "Ringing…" for as long as the demo runs."""
    # Its phones ring 0.3 s from the start: set later, the ringer's first wait would be the
    # minute's (1 s).
    demo = Demo(0, tmp_path, poll_seconds=(0.05, 0.2), ring_seconds=0.3)
    await demo.start()
    try:
        await demo.world.say("/call +1 814 404 3093 page")
        [message] = await eventually(lambda: demo.world.slack.channel_messages(CHANNEL))
        await eventually(lambda: "Ended" in thread_text(demo, message.ts))
        await eventually(lambda: "Not answered" in str(
            demo.world.slack.messages[(CHANNEL, message.ts)].text))
        [phone] = demo.world.state()["phones"]
        assert phone["state"] == "ended" and phone["outcome"] == "No answer"
    finally:
        await demo.stop()


async def test_the_demo_s_slack_keeps_to_slack_s_posting_limit(demo: Demo) -> None:
    """As the tests' Slack does (tests/conftest.py): about a message a second in a channel, a burst
    of 3; a post over it is answered 429 and the bot sends it again after the Retry-After. The
    demo showed a burst of calls in one channel posted at once, as no workspace would take it."""
    world = demo.world
    await asyncio.gather(*(world.command(f"+1 814 404 309{n} page") for n in (3, 4, 5, 6)))
    parents = await eventually(lambda: len(world.slack.channel_messages(CHANNEL)) == 4
                               and world.slack.channel_messages(CHANNEL))
    for parent in parents:  # every call's thread, in the end
        await eventually(lambda parent=parent: "Call placed" in thread_text(demo, parent.ts))
    assert any(call.method == "chat.postMessage" and call.status == 429
               for call in world.slack.calls)


async def test_the_page_api_answers_only_its_own_page(demo: Demo) -> None:
    # Any page open in the same browser could POST plain text to the demo's API (no preflight),
    # and one whose name was rebound to 127.0.0.1 could read its state too: a request for
    # another host, or a change sent from another page, is refused.
    port = demo.port
    say = json.dumps({"text": "hello from elsewhere"}).encode()
    async with aiohttp.ClientSession() as http:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", f"127.0.0.2:{port}"):
            for method, path in (("GET", "api/state"), ("GET", ""), ("POST", "api/say")):
                async with http.request(method, demo.url + path, data=say,
                                        headers={"Host": host,
                                                 "Content-Type": "text/plain"}) as response:
                    assert response.status == 403, (host, method, path)
                    assert "refused" in await response.text()
        for origin in ("http://evil.example", f"http://localhost.evil.example:{port}", "null",
                       f"https://127.0.0.1:{port}", "http://127.0.0.1:1"):
            async with http.post(demo.url + "api/say", data=say,
                                 headers={"Origin": origin, "Content-Type": "text/plain"}
                                 ) as response:
                assert response.status == 403, origin
        assert demo.world.state()["messages"] == []
        # The page itself, as 127.0.0.1 or as localhost, and a client that sends no Origin.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            async with http.get(demo.url + "api/state", headers={"Host": host}) as response:
                assert response.status == 200, host
            async with http.post(demo.url + "api/say", data=say,
                                 headers={"Host": host, "Origin": f"http://{host}"}
                                 ) as response:
                assert response.status == 200, host
        async with http.post(demo.url + "api/say", data=say) as response:
            assert response.status == 200
    assert len(demo.world.state()["messages"]) == 4
