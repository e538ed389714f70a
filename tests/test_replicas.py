"""Two real bot processes on one database: shared limits, one dial per view, and the loss of a
replica (SIGKILL) while it follows a call or drives an escalation.

Each replica is `python -m bot` as a deployment runs it, in HTTP mode behind its own port (a load
balancer would spread Slack's requests over them), with a short LEASE_SECONDS so a takeover comes
quickly. The survivor's first action after the kill is printed (takeover time, for the record);
no test asserts how long anything took.

One test (on both databases) waits in real time for the dead replica's leases to lapse, as
deployments do; the others, about what the survivor does once it has the work, lapse them at the
kill (`Replica.die`), as the time going by would: the 2 s they waited each proved nothing more.
How a lease lapses on its clock is tests/test_leases.py's.

The replicas start on a database migrated already (as `bot_factory`'s bots do), except for one test
(on both databases) whose pair finds it empty and migrates it together, as a deployment's replicas
do at their first start: migrating a schema twice over costs PostgreSQL more than the rest of a
test here, and proves nothing more each time.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.oncall.escalation_store import EscalationState
from bot.oncall.escalation_views import ACK_ESCALATION_ACTION
from bot.standins.evovoice import EvoVoiceStandIn, Gated
from bot.storage.database import Database
from bot.standins.slack import SlackStandIn, slash_command_payload
from tests.conftest import bot_environment, policy_with, until
from tests.databases import SQLITE, fresh_database, migrated_database, on_both_databases
from tests.follow_helpers import (
    FAST,
    FULL,
    end_session,
    parent_of,
    status_message,
    texts,
    wait_for_edit,
    wait_for_mark,
)
from tests.processes import BotProcess
from tests.replica_processes import (
    Replica,
    first_request_after,
    parent_noted,
    session_found,
    until_ready,
)
from tests.escalations import (
    CHANNEL,
    ROSTER,
    click_ack,
    dialled,
    escalation_message,
    hung_up,
    open_global,
    open_on_message,
    session_of,
    submit,
)
from tests.interactions import click as answer
from tests.interactions import interact, open_form, state, submission
from tests.postgres_schemas import MigratedSchemas

LEASE_SECONDS = "3"


@pytest.fixture
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Path,
    migrated_schemas: MigratedSchemas,
) -> AsyncIterator[str]:
    """The replicas' database, at the SQLite path `bot_environment` names or in a PostgreSQL schema:
    migrated already (tests/databases.py `migrated_database`), or empty for a test that asks for
    `an_empty_database`."""
    backend = getattr(request, "param", SQLITE)
    if "an_empty_database" in request.fixturenames:
        async with fresh_database(backend, tmp_path) as url:
            yield url
    else:
        async with migrated_database(backend, tmp_path, migrated_sqlite, migrated_schemas) as url:
            yield url


@pytest.fixture
def an_empty_database() -> None:
    """The replicas start on an empty database (see `database_url`): they migrate it together."""


@pytest.fixture
async def replicas(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, database_url: str
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Replica] = []
    http = aiohttp.ClientSession()

    async def start(
        count: int = 2, policy: str | None = None, mode: str = "http", **env: str
    ) -> list[Replica]:
        if policy is not None:
            policy_path.write_text(policy)
        group = []
        for n in range(count):
            values = bot_environment(mode, slack, evo, policy_path, database_url=database_url)
            values.update(FAST, LEASE_SECONDS=LEASE_SECONDS, **env)
            process = await BotProcess.launch(values, policy_path.parent,
                                              f"replica-{len(started) + n}")
            group.append(Replica(runtime=None, mode=mode, slack=slack, evo=evo,  # type: ignore[arg-type]
                                 http=http, process=process, database_url=database_url))
        started.extend(group)
        for replica in group:  # started together: on an empty database, they migrate it at once
            await until_ready(replica)
        return group

    yield start
    for replica in started:
        await replica.bot.stop(signal.SIGTERM)
    await http.close()


@on_both_databases
@pytest.mark.usefixtures("an_empty_database")
async def test_limits_are_shared_by_the_replicas(replicas: Any, evo: EvoVoiceStandIn) -> None:
    a, b = await replicas(policy=policy_with(per_user="1/10m"))
    await a.command(f"{FULL} escalation")
    await evo.wait_for_posts(1)
    _, url = await b.command("+18144043094 escalation")
    [refusal] = await b.slack.wait_for_response(url)
    assert "You have placed 1 call in the last 10 minutes" in str(refusal), refusal
    assert len(evo.outgoing_posts) == 1


@on_both_databases
async def test_a_view_submitted_to_both_replicas_at_once_dials_once_and_outlives_its_replica(
    replicas: Any, evo: EvoVoiceStandIn,
) -> None:
    # One pair of replicas for both halves (starting a bot costs more CPU than the rest of a test
    # here): the call the double submission placed is the one followed through a SIGKILL.
    a, b = await replicas()
    view = await open_form(a)
    payload = submission(view, state())
    answers = await asyncio.gather(interact(a, payload), interact(b, payload))
    assert all(answer.get("response_action") is None for answer in answers)
    await evo.wait_for_posts(1)
    await a.slack.wait_for_call("chat.postMessage", lambda c: "Call placed" in str(c.params))
    assert len(evo.outgoing_posts) == 1

    # The replica that placed the call follows it; it dies, and the other follows it to its end.
    status = await status_message(a)
    [session_id] = evo.sessions
    await until(lambda: evo.reads_of(session_id))
    [placer] = [r for r in (a, b) if f"placed: session {session_id}" in r.bot.output()]
    survivor = b if placer is a else a
    died = await placer.kill()

    end_session(a, session_id, after_seconds=42, outcome="Completed")
    await wait_for_edit(survivor, status, "Ended", timeout=30)
    print(f"\nfollowed call taken over {first_request_after(evo, died) - died:.2f} s after SIGKILL")
    assert len(evo.outgoing_posts) == 1


@on_both_databases
async def test_an_end_slack_refused_is_shown_by_another_replica_when_its_own_dies(
    replicas: Any, slack: SlackStandIn, evo: EvoVoiceStandIn,
) -> None:
    # The call ends while Slack refuses every edit; its replica, trying again, dies. The other
    # replica runs on (it does not restart): the requester still learns the outcome.
    a, b = await replicas()
    await a.command(f"{FULL} escalation")
    status = await status_message(a)
    parent = parent_of(a, status)
    [session_id] = evo.sessions
    slack.fail("chat.update", "internal_error")
    end_session(a, session_id, after_seconds=30, outcome="No answer")
    await slack.wait_for_call(
        "chat.update", lambda c: not c.ok and "Ended" in str(c.params.get("text")), timeout=10)
    await a.die()
    slack.off("chat.update")
    assert "Ringing" in (status.text or "")

    await wait_for_edit(b, status, "❌ Ended: No answer, lasted 30 s.", timeout=30)
    assert await wait_for_mark(b, parent) == "x"
    assert texts(parent)[-1].endswith("❌ Not answered.")


@on_both_databases
async def test_an_escalation_whose_replica_dies_mid_step_goes_on_in_another(
    replicas: Any, evo: EvoVoiceStandIn,
) -> None:
    a, b = await replicas(policy=ROSTER)
    view, _ = await open_on_message(a)
    assert await submit(a, view) == {}
    escalation = await escalation_message(a)
    [first] = [str(r.json["numberToDial"]) for r in await evo.wait_for_posts(1)]
    await a.slack.wait_for_call(
        "chat.update", lambda c: c.params.get("ts") == escalation.ts and "ringing" in str(c.params)
    )
    await a.die()
    # The phone rings out unanswered while nobody drives the chain: the survivor, taking the
    # chain over, follows the step's call to its end and dials the next person.
    evo.set_session_state(session_of(a, first), ended=True, callState="Disconnected")

    await evo.wait_for_posts(2, timeout=60)
    second = dialled(a)[1]
    assert second != first
    await a.slack.wait_for_call(
        "chat.update",
        lambda c: c.params.get("ts") == escalation.ts and "didn't answer" in str(c.params),
        timeout=30,
    )
    assert dialled(a) == [first, second], "each step dialled once"
    assert not hung_up(a, session_of(a, first))  # it had ended: nothing to hang up


@on_both_databases
async def test_a_responder_s_own_limit_holds_for_forms_submitted_to_both_replicas_at_once(
    replicas: Any, evo: EvoVoiceStandIn, database_url: str,
) -> None:
    """Someone without a role, `escalations_per_person = "2/1h"`, presses Escalate on six forms at
    once, spread over both replicas: two escalations start, the four others are refused in words."""
    a, b = await replicas(policy=ROSTER + 'escalations_per_person = "2/1h"\n')
    forms = [(r, (await open_on_message(r, text=f"down {n}", user_id="U0DEV"))[0])
             for n, r in enumerate((a, b) * 3)]
    answers = await asyncio.gather(*(submit(r, form, user_id="U0DEV") for r, form in forms))
    too_many = "You have started 2 escalations in the last hour"

    def refused() -> int:
        in_form = [x for x in answers if too_many in str(x.get("errors"))]
        privately = [body for bodies in a.slack.responses.values() for body in bodies
                     if too_many in str(body.get("text"))]
        return len(in_form) + len(privately)

    await until(lambda: refused() == 4, timeout=10)
    await evo.wait_for_posts(2)
    db = Database(database_url)
    await db.open_read_only()
    try:
        rows = await db.fetchall("SELECT requester_id FROM escalations")
    finally:
        await db.close()
    assert [r["requester_id"] for r in rows] == ["U0DEV", "U0DEV"], answers
    assert len(evo.outgoing_posts) == 2


async def test_socket_mode_envelopes_spread_over_the_replicas_connections(
    replicas: Any, slack: SlackStandIn, evo: EvoVoiceStandIn,
) -> None:
    slack.spread_envelopes = True
    a, b = await replicas(mode="socket")
    await slack.wait_socket_connections(2, timeout=30)
    numbers = [f"+1814404300{i}" for i in range(4)]
    ids = [await slack.post_envelope("slash_commands", slash_command_payload(
        text=f"{number} escalation", response_url=slack.response_url(),
        trigger_id=slack.new_trigger_id())) for number in numbers]
    acks = [await slack.wait_for_ack(envelope_id, timeout=10) for envelope_id in ids]
    assert all(ack["envelope_id"] in ids for ack in acks)
    assert {slack.envelopes[i].connection for i in ids} == {1, 2}, "both replicas served"
    await evo.wait_for_posts(4, timeout=10)
    assert sorted(str(r.json["numberToDial"]) for r in evo.outgoing_posts) == numbers


@on_both_databases
async def test_an_escalations_end_slack_refused_is_shown_by_another_replica_when_its_own_dies(
    replicas: Any, slack: SlackStandIn, evo: EvoVoiceStandIn, database_url: str,
) -> None:
    a, b = await replicas(policy=ROSTER)
    view, _ = await open_on_message(a)
    assert await submit(a, view) == {}
    escalation = await escalation_message(a)
    await evo.wait_for_posts(1)
    await slack.wait_for_call(
        "chat.update", lambda c: c.params.get("ts") == escalation.ts and "ringing" in str(c.params)
    )
    # Acknowledged while Slack refuses every edit; the replica driving the chain, trying the
    # card's last edit again, dies. The channel still learns that somebody is on it.
    slack.fail("chat.update", "internal_error")
    await click_ack(a, escalation, user_id="U0ADMIN")
    db = Database(database_url)
    await db.open()
    try:
        for _ in range(1000):
            [row] = await db.fetchall("SELECT state FROM escalations")
            if row["state"] == EscalationState.ACKNOWLEDGED:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("never acknowledged")
    finally:
        await db.close()
    await a.die()  # over, its card not shown: a chain no longer active
    slack.off("chat.update")

    await slack.wait_for_call(
        "chat.update", lambda c: c.ok and c.params.get("ts") == escalation.ts
        and "<@U0ADMIN> acknowledged at" in str(c.params.get("text")), timeout=30)
    assert ACK_ESCALATION_ACTION not in str(escalation.blocks), "its buttons gone"


@on_both_databases
async def test_a_call_whose_replica_died_while_dialling_is_told_in_the_thread_it_opened(
    replicas: Any, slack: SlackStandIn, evo: EvoVoiceStandIn, database_url: str,
) -> None:
    # The replica placing a call dies with its POST in flight, its parent ("📞 … is calling")
    # already in the channel; Evo Voice places the call all the same. The other replica, running
    # on, finds it: the channel must not read two calls, one of them never told.
    a, b = await replicas()
    gate = asyncio.Event()
    evo.queue_outgoing(Gated(gate))
    await a.command(f"{FULL} escalation")
    await evo.wait_for_posts(1)
    await slack.wait_for_call("chat.postMessage", lambda c: c.ok and not c.params.get("thread_ts")
                              and "is calling" in str(c.params.get("text")))
    await parent_noted(database_url)
    await a.die()
    gate.set()
    await until(lambda: bool(evo.sessions))
    [session_id] = evo.sessions

    post = await slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and "restarted while placing" in str(c.params),
        timeout=30)
    assert post.response is not None
    status = slack.messages[(post.response["channel"], post.response["ts"])]
    await wait_for_edit(b, status, session_id, timeout=30)
    end_session(b, session_id, after_seconds=20, outcome="Completed")
    await wait_for_edit(b, status, "Ended", timeout=30)
    parents = [m for m in slack.messages.values()
               if m.thread_ts in (None, m.ts) and "is calling" in str(texts(m)[0])]
    assert len(parents) == 1, [texts(m) for m in parents]
    assert await wait_for_mark(b, parents[0]) == "x"
    assert texts(parents[0])[-1].endswith("❌ Not answered.")
    assert len(evo.outgoing_posts) == 1


@on_both_databases
async def test_an_escalation_step_whose_replica_died_while_dialling_posts_nothing_of_its_own(
    replicas: Any, slack: SlackStandIn, evo: EvoVoiceStandIn,
) -> None:
    # An escalation from the ⚡ shortcut dials its first step before its card exists. The replica
    # dies with that POST in flight; the other finds the step's call left dialling. The card tells
    # the step (a step posts nothing of its own): no "📞 … is calling" of its own in the channel,
    # outside the escalation's thread, with Hang up and Call again.
    a, b = await replicas(policy=ROSTER)
    gate = asyncio.Event()
    evo.queue_outgoing(Gated(gate))
    view = await open_global(a)
    assert await submit(a, view, channel=CHANNEL) == {}
    await evo.wait_for_posts(1)
    await escalation_message(a)
    await a.die()
    gate.set()
    await until(lambda: bool(evo.sessions))
    [session_id] = evo.sessions
    await session_found(b.database_url)  # an announcement of its own would be posted by now
    assert not [c for c in slack.calls_to("chat.postMessage")
                if "restarted while placing" in str(c.params) or "is calling" in str(c.params)]
    assert session_id in evo.sessions and len(evo.outgoing_posts) == 1


async def test_a_confirmed_call_whose_replica_was_killed_before_dialling_is_told_by_the_other(
    replicas: Any, slack: SlackStandIn, evo: EvoVoiceStandIn,
) -> None:
    # B asks the question; A takes the click on "Call", tells the requester "Confirmed: checking
    # again, then calling." and checks the role again: the user group that gives it, which only B
    # has looked up so far. Slack's answer to that is held while A is killed. Nothing was dialled:
    # B's next round replaces "Confirmed" with the news that the call was not placed.
    a, b = await replicas()
    _, url = await b.command("+14165550123 escalation", user_id="U0LEAD1")
    [question] = await slack.wait_for_response(url)
    looking_up = slack.hold("usergroups.users.list")
    _, clicked = await answer(a, question, user_id="U0LEAD1")
    await looking_up.wait_until_held()
    await slack.wait_for_response(clicked)
    await a.die(lease_seconds=float(LEASE_SECONDS))
    looking_up.open()
    told = (await slack.wait_for_response(clicked, n=2, timeout=10))[1]
    assert "was *not* placed" in str(told["text"]) and told["replace_original"] is True, told
    assert evo.outgoing_posts == []
