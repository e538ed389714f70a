"""Graceful shutdown: calls in flight finish and are confirmed; new work is refused cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest

from bot.calls import form as forms
from bot.calls.confirm_views import CONFIRM_CALL_ACTION
from bot.calls.status_views import HANG_UP_ACTION
from bot.listeners import restarting
from bot.oncall import escalation_form
from bot.slack.modals import ModalMetadata
from bot.standins.evovoice import EvoVoiceStandIn, Gated
from bot.standins.slack import (
    SlackStandIn,
    block_actions_payload,
    block_suggestion_payload,
    global_shortcut_payload,
    interactive_body,
    sign,
    slash_command_body,
    slash_command_payload,
    view_submission_payload,
)
from tests.conftest import (
    APP_TOKEN,
    BOT_TOKEN,
    EVO_PASSWORD,
    SIGNING_SECRET,
    BotFactory,
    BotUnderTest,
    bot_environment,
    until,
)
from tests.databases import on_both_databases
from tests.escalations import ALICE, alices_post_held, dialled, start
from tests.follow_helpers import services
from tests.interactions import ask, button, click, open_form, state, submission
from tests.processes import BotProcess

FULL = "+18144043093"


def placed(bot: BotUnderTest) -> list[str]:
    return [str(c.params["text"]) for c in bot.slack.calls_to("chat.postMessage")
            if "Call placed" in str(c.params.get("text"))]


async def test_a_call_in_flight_finishes_and_new_requests_are_refused(bot: BotUnderTest) -> None:
    gate = asyncio.Event()
    bot.evo.queue_outgoing(Gated(gate))
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)

    stopping = asyncio.create_task(bot.runtime.stop())
    services = bot.runtime.services
    assert services is not None
    await until(lambda: services.tasks.closed)

    # While the call finishes, Slack is still answered, but nothing new is taken on.
    ack, _ = await bot.command("+18144043094 escalation", user_id="U0ADMIN")
    assert ack.status == 200 and "restarting" in ack.text and "nothing was dialled" in ack.text
    counted = generate_latest(bot.runtime.metrics.registry).decode()
    assert 'callbot_commands_total{command="/call",outcome="unavailable"} 1.0' in counted
    async with bot.http.get(f"http://127.0.0.1:{bot.runtime.port}/healthz") as response:
        assert response.status == 503
    assert not stopping.done()

    gate.set()
    await asyncio.wait_for(stopping, 10)
    [reply] = placed(bot)
    assert len(bot.evo.outgoing_posts) == 1
    parent = next(c for c in bot.slack.calls_to("chat.postMessage") if "thread_ts" not in c.params)
    assert "<@U0MANAGER>" in parent.params["text"]


async def test_the_probes_say_the_bot_is_stopping_while_it_stops(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    gate = asyncio.Event()
    bot.evo.queue_outgoing(Gated(gate))
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    stopping = asyncio.create_task(bot.runtime.stop())
    services = bot.runtime.services
    assert services is not None
    await until(lambda: services.tasks.closed)

    # Not ready (503), so the load balancer stops sending; and not "starting", which would send
    # whoever reads it looking for a start-up problem.
    base = f"http://127.0.0.1:{bot.runtime.port}"
    async with bot.http.get(f"{base}/healthz") as response:
        assert (response.status, await response.json()) == (503, {"status": "stopping"})
    async with bot.http.get(f"{base}/readyz") as response:
        assert (response.status, await response.json()) == (503, {
            "status": "not ready", "failed": ["callbot"], "checks": {"callbot": "stopping"}})
    gate.set()
    await asyncio.wait_for(stopping, 10)


async def test_a_confirmation_click_during_shutdown_keeps_the_question(
    bot_factory: object,
) -> None:
    bot = await bot_factory("http")  # type: ignore[operator]
    question = await ask(bot, "+14165550123 escalation")
    gate = asyncio.Event()
    bot.evo.queue_outgoing(Gated(gate))
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    stopping = asyncio.create_task(bot.runtime.stop())
    await until(lambda: bot.runtime.services.tasks.closed)
    _, url = await click(bot, question)
    [answer] = await bot.slack.wait_for_response(url)
    assert "restarting" in answer["text"]
    gate.set()
    await stopping
    assert len(bot.evo.outgoing_posts) == 1

    bot = await bot_factory("http")  # type: ignore[operator]
    await click(bot, question)  # the same button works after the restart
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


async def test_stop_does_not_wait_forever_for_a_stuck_call(bot: BotUnderTest) -> None:
    gate = asyncio.Event()  # never opened
    bot.evo.queue_outgoing(Gated(gate))
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    await asyncio.wait_for(bot.runtime.stop(grace=0.2), 10)
    assert bot.runtime.services is not None and bot.runtime.services.tasks.pending == 0


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_sigterm_lets_the_call_in_flight_finish_then_exits_0(
    mode: str, slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    env = bot_environment(mode, slack, evo, policy_path)
    env["LOG_LEVEL"] = "DEBUG"
    gate = asyncio.Event()
    evo.queue_outgoing(Gated(gate))
    bot = await BotProcess.start(env, policy_path.parent)
    try:
        async with aiohttp.ClientSession() as http:
            async def healthy() -> bool:
                async with http.get(bot.base + "/healthz") as response:
                    return response.status == 200

            for _ in range(600):
                if await healthy():
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the bot never became healthy")
            url = slack.response_url()
            if mode == "socket":
                await slack.wait_connected()
                await slack.send_envelope("slash_commands", slash_command_payload(
                    text=f"{FULL} escalation", response_url=url))
            else:
                data = slash_command_body(text=f"{FULL} escalation", response_url=url)
                async with http.post(bot.base + "/slack/events", data=data,
                                     headers=sign(data, SIGNING_SECRET)) as response:
                    assert response.status == 200
            await evo.wait_for_posts(1, timeout=10)
            bot.send(signal.SIGTERM)
            # The bot exiting before finishing the call fails this wait.
            await bot.wait_for_line("signal received")
            gate.set()
            await slack.wait_for_call("chat.postMessage", lambda c: "Call placed" in
                                      str(c.params.get("text")), timeout=10)
    finally:
        gate.set()
        code = await bot.stop(signal.SIGTERM)
    log = bot.output()
    assert code == 0, log
    assert "callbot ready" in log and "callbot stopped" in log
    assert len(evo.outgoing_posts) == 1
    for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, EVO_PASSWORD, FULL, "/response/"):
        assert secret not in log, secret


@pytest.mark.parametrize(
    "callback_id", [forms.PLACE_CALL_SHORTCUT_ID, escalation_form.ESCALATE_GLOBAL_SHORTCUT_ID]
)
async def test_a_shortcut_during_shutdown_says_so_instead_of_opening_a_form(
    bot_factory: BotFactory, callback_id: str
) -> None:
    bot = await bot_factory("http")
    assert bot.runtime.services is not None
    await bot.runtime.services.tasks.drain(0)  # the start of a shutdown: no new work
    trigger = bot.slack.new_trigger_id()
    payload = global_shortcut_payload(callback_id=callback_id, trigger_id=trigger)
    assert (await bot.post_signed(interactive_body(payload))).status == 200
    opened = await bot.slack.wait_for_call("views.open")
    assert opened.params["trigger_id"] == trigger
    assert "restarting" in json.dumps(opened.params["view"])
    assert "submit" not in opened.params["view"], "a notice, not a form"


async def test_during_shutdown_a_button_click_is_answered_and_does_nothing(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    assert bot.runtime.services is not None
    await bot.runtime.services.tasks.drain(0)
    url = bot.slack.response_url()
    payload = block_actions_payload(action_id=HANG_UP_ACTION, value="1", response_url=url)
    assert (await bot.post_signed(interactive_body(payload))).status == 200
    [answer] = await bot.slack.wait_for_response(url)
    assert "restarting" in answer["text"] and answer.get("replace_original") is not True
    await bot.settle()
    assert not [r for r in bot.evo.requests if r.method == "DELETE"]


async def test_during_shutdown_a_submitted_form_stays_open_with_the_reason(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    assert bot.runtime.services is not None
    view = forms.call_form(ModalMetadata())
    await bot.runtime.services.tasks.drain(0)
    payload = view_submission_payload(
        callback_id=forms.CALL_FORM_CALLBACK_ID, values={}, view=view
    )
    ack = await bot.post_signed(interactive_body(payload))
    assert ack.body["response_action"] == "errors"
    [(block_id, text)] = ack.body["errors"].items()
    first_input = next(b for b in view["blocks"] if b["type"] == "input")
    assert block_id == first_input["block_id"] and "restarting" in text
    assert bot.evo.outgoing_posts == []


async def test_during_shutdown_a_menu_offers_nothing(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    assert bot.runtime.services is not None
    await bot.runtime.services.tasks.drain(0)
    payload = block_suggestion_payload(action_id="flow", value="esc")
    ack = await bot.post_signed(interactive_body(payload))
    assert ack.status == 200 and ack.body == {"options": []}


async def test_socket_mode_answers_what_it_received_before_it_closes(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("socket")
    # /call help from someone whose roles come from a user group Slack is slow to list: its ack
    # is still being made when the bot is told to stop.
    gate = bot.slack.hold("usergroups.users.list")
    try:
        payload = slash_command_payload(text="help", user_id="U0NOBODY",
                                        response_url=bot.slack.response_url())
        asking = asyncio.create_task(bot.slack.send_envelope("slash_commands", payload))
        await gate.wait_until_held()
        stopping = asyncio.create_task(bot.runtime.stop())
        # Nothing else running, the bot now waits for the ack: Slack lists the group then.
        await until(lambda: services(bot).tasks.closed and services(bot).tasks.pending == 0)
        gate.open()
        await stopping
        ack = await asking
    finally:
        gate.open()
    assert "/call" in json.dumps(ack.get("payload")), ack


@on_both_databases
async def test_a_stopping_replica_keeps_its_leases_while_a_step_s_call_is_still_being_placed(
    bot_factory: BotFactory,
) -> None:
    """Replica A is stopped (a deploy) while an escalation step's POST is on its way and Evo Voice
    is slow to answer it: A waits for it (chains pause only between steps) and holds its leases
    meanwhile. Replica B, on the same database, must not take that call for one a dead replica
    left halfway ("callbot restarted while placing this call, so it may or may not have been
    placed", in the escalation's thread), nor drive the chain beside A.

    Rather than wait a lease in real time, A's leases and heartbeat are moved a lease into the
    past once it is stopping, as if it had stopped renewing them that long ago: A, still renewing,
    brings them up to date, and only then does B start (it would take them over meanwhile)."""
    a, clock, gate = await alices_post_held(bot_factory, LEASE_SECONDS="3", EVOVOICE_TIMEOUT="60")
    db, owner = services(a).db, services(a).leases.owner

    async def renewed() -> bool:
        [row] = await db.fetchall("SELECT MIN(expires_at) AS e FROM leases WHERE owner = ?",
                                  (owner,))
        return float(row["e"]) > time.time()

    stopping = asyncio.create_task(a.runtime.stop())
    await until(lambda: services(a).tasks.closed)
    lease = a.runtime.settings.lease_seconds
    await db.execute("UPDATE leases SET expires_at = expires_at - ? WHERE owner = ?",
                     (lease, owner))
    await db.execute("UPDATE replicas SET seen_at = seen_at - ? WHERE id = ?", (lease, owner))
    services(a).leases.wake()  # A's next round now, not at the end of its half-second pause
    for _ in range(200):
        if await renewed():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the stopping replica no longer renews its leases")
    b, _ = await start(bot_factory, clock=clock, LEASE_SECONDS="3")
    await services(b).escalations.take_over()  # a lease keeper's round, now
    await services(b).follower.take_over()
    assert not stopping.done()  # still waiting for the POST's answer
    assert services(b).escalations.running == 0
    assert services(b).follower.following == 0

    gate.set()
    await asyncio.wait_for(stopping, 30)
    # Once A has stopped, B goes on from the rows: Alice's call is followed, never dialled again.
    await services(b).follower.take_over()  # B's next lease keeper's round, now
    await until(lambda: services(b).follower.following == 1, timeout=10)
    assert dialled(b) == [ALICE]
    assert not [c for c in b.slack.calls_to("chat.postMessage")
                if "restarted while placing" in str(c.params.get("text"))]


async def delivered(bot: BotUnderTest, kind: str, payload: dict[str, object],
                    envelope_id: str | None = None) -> tuple[dict[str, object], str]:
    """`payload` delivered as Slack does in this mode (`envelope_id`: the same envelope again);
    the ack's body and the envelope's id."""
    if bot.mode == "socket":
        if kind == "slash_commands":
            payload = slash_command_payload(**payload)  # type: ignore[arg-type]
        sent = await bot.slack.post_envelope(kind, payload, envelope_id=envelope_id)
        return dict((await bot.slack.wait_for_ack(sent)).get("payload") or {}), sent
    body = (slash_command_body(**payload) if kind == "slash_commands"  # type: ignore[arg-type]
            else interactive_body(payload))
    headers = sign(body, SIGNING_SECRET)
    if envelope_id is not None:  # Slack's retry of a request it heard no 2xx to in 3 s
        headers |= {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    async with bot.http.post(bot.events_url, data=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        raw = await response.text()
    return (json.loads(raw) if raw else {}), "again"


@on_both_databases
@pytest.mark.parametrize("mode", ["http", "socket"])
@pytest.mark.parametrize("request_kind", ["command", "form", "click"])
async def test_a_request_handled_before_shutdown_and_delivered_again_during_it_is_not_denied(
    bot_factory: BotFactory, mode: str, request_kind: str
) -> None:
    """Slack delivers again a request whose ack it never got (a Socket Mode envelope after the
    socket closed, an HTTP request answered after 3 s) just as the bot begins to stop. The first
    delivery was handled: its call is placed. The copy must not tell the requester "restarting,
    so nothing was dialled" about a call that was dialled (nor leave a form open saying so)."""
    bot = await bot_factory(mode)
    url = bot.slack.response_url()
    kind = "interactive"
    if request_kind == "command":
        kind = "slash_commands"
        payload: dict[str, object] = dict(text=f"{FULL} escalation", response_url=url,
                                          trigger_id=bot.slack.new_trigger_id())
    elif request_kind == "form":
        payload = submission(await open_form(bot), state())
    else:
        question = await ask(bot, "+14165550123 escalation")
        payload = block_actions_payload(
            action_id=CONFIRM_CALL_ACTION, block_id="call_confirmation",
            value=button(question, CONFIRM_CALL_ACTION)["value"], response_url=url,
            extra_action={"action_ts": "1700000500.000001"},
        )
    _, envelope_id = await delivered(bot, kind, payload)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    told = len(bot.slack.responses_to(url))
    await services(bot).tasks.drain(0)  # the bot begins to stop

    again, _ = await delivered(bot, kind, payload, envelope_id)
    await until(lambda: not restarting.answering())  # a reply to a click goes after its ack
    assert "restarting" not in json.dumps(again)
    assert again.get("response_action") is None  # a form closes, as its first Submit closed it
    assert len(bot.slack.responses_to(url)) == told
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_stopping_socket_mode_replica_leaves_what_comes_next_to_the_others(
    bot_factory: BotFactory, slack: SlackStandIn, evo: EvoVoiceStandIn,
) -> None:
    """Two replicas in Socket Mode (a rolling update), Slack spreading envelopes over their
    connections. One is told to stop while a call it placed is still being answered: what Slack
    sends meanwhile goes to the other, which places the calls, rather than half of the /calls
    being told "callbot is restarting" while a replica able to take them runs beside it."""
    other = await bot_factory("socket")
    await slack.wait_socket_connections(1)
    leaving = await bot_factory("socket", EVOVOICE_TIMEOUT="60")  # its call waits for the gate
    await slack.wait_socket_connections(2)
    gate = asyncio.Event()
    evo.queue_outgoing(Gated(gate))
    await leaving.command(f"{FULL} escalation")  # the newest connection: the leaving replica's
    await evo.wait_for_posts(1)
    stopping = asyncio.create_task(leaving.runtime.stop())
    await until(lambda: services(leaving).tasks.closed)

    slack.spread_envelopes = True
    numbers = [f"+1814404310{i}" for i in range(4)]
    acks = [(await other.command(f"{number} escalation"))[0] for number in numbers]
    assert not [ack.text for ack in acks if "restarting" in ack.text]
    await evo.wait_for_posts(5)
    assert sorted(str(p.json["numberToDial"]) for p in evo.outgoing_posts[1:]) == numbers
    gate.set()
    await asyncio.wait_for(stopping, 10)
