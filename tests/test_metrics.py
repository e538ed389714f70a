"""`GET /metrics`: what the bot counts, end to end in both modes, and the Evo Voice observer."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase

from bot.calls.models import Outcome
from bot.evovoice.client import EvoVoiceClient, EvoVoiceError, RequestObserved
from bot.ops.metrics import Metrics, request_kind
from bot.standins.evovoice import (
    Behaviour,
    Delayed,
    DropConnection,
    ErrorStatus,
    EvoVoiceStandIn,
    TooManyRequests,
)
from bot.standins.slack import slash_command_body
from tests.conftest import EVO_PASSWORD, EVO_USER, BotFactory, BotUnderTest, policy_with
from tests.metrics_scrape import Samples, parse, scrape, value

FULL = "+18144043093"


async def wait_for_value(bot: BotUnderTest, name: str, expected: float, **labels: str) -> Samples:
    """Socket Mode records an ack just after sending it, so the test may look a moment early."""
    for _ in range(250):
        samples = await scrape(bot)
        if value(samples, name, **labels) == expected:
            return samples
        await asyncio.sleep(0.02)
    last = value(samples, name, **labels)
    raise AssertionError(f"{name}{labels} never reached {expected}: {last}")


async def test_a_placed_call_is_counted_everywhere(bot: BotUnderTest) -> None:
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    samples = await wait_for_value(bot, "callbot_slack_ack_seconds_count", 1, kind="slash_command")

    assert value(samples, "callbot_commands_total", command="/call", outcome="accepted") == 1
    assert value(samples, "callbot_calls_total", outcome="placed") == 1
    # Every outcome is there from the start, at 0, for rate() to work.
    for outcome in Outcome:
        assert ("callbot_calls_total", frozenset({("outcome", outcome.value)})) in samples
    assert value(samples, "callbot_calls_total", outcome="failed") == 0
    assert value(samples, "callbot_slack_ack_seconds_bucket", kind="slash_command", le="+Inf") == 1
    # Slack's deadline (3 s) is a bucket's edge: "acks later than Slack waits" is one query.
    assert value(samples, "callbot_slack_ack_seconds_bucket", kind="slash_command", le="3.0") == 1
    # Nothing failed: no error is counted.
    assert [key for key in samples if key[0] == "callbot_evovoice_errors_total"] == []
    assert value(samples, "callbot_evovoice_request_seconds_count",
                 method="POST", route="/sessions/outgoing") == 1
    # Start-up's own requests are observed too.
    assert value(samples, "callbot_evovoice_request_seconds_count",
                 method="GET", route="/auth/status") >= 1
    text = repr(samples)
    assert "4043093" not in text and "U0MANAGER" not in text, "no users or numbers in labels"


async def test_help_invalid_and_refused_requests(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command("help")
    await bot.command("escalation")  # no number
    await bot.command(f"{FULL} escalation", user_id="U0INTRUDER")
    await bot.settle()
    samples = await scrape(bot)
    assert value(samples, "callbot_commands_total", command="/call", outcome="help") == 1
    assert value(samples, "callbot_commands_total", command="/call", outcome="invalid") == 1
    assert value(samples, "callbot_commands_total", command="/call", outcome="accepted") == 1
    assert value(samples, "callbot_calls_total", outcome="refused") == 1
    assert value(samples, "callbot_slack_ack_seconds_count", kind="slash_command") == 3


@pytest.mark.parametrize(
    ("behaviour", "kind", "outcome"),
    [(ErrorStatus(500), "server_error", Outcome.UNKNOWN),
     (TooManyRequests(), "rate_limited", Outcome.FAILED),
     (ErrorStatus(403, "Invalid Role"), "missing_role", Outcome.FAILED),
     # A 403 that is not "Invalid Role" (a proxy, a refused agent) is no missing role (README).
     (ErrorStatus(403, "Access denied", "Forbidden"), "forbidden", Outcome.FAILED),
     (ErrorStatus(401, "Invalid UserName or Password"), "bad_login", Outcome.FAILED)],
)
async def test_evovoice_errors_are_counted_by_kind(
    bot_factory: BotFactory, behaviour: object, kind: str, outcome: Outcome
) -> None:
    bot = await bot_factory("http")
    bot.evo.queue_outgoing(behaviour)  # type: ignore[arg-type]
    if kind == "bad_login":  # a 401 is answered by signing in: refused too
        bot.evo.queue("POST", "/auth/credentials", behaviour)  # type: ignore[arg-type]
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    samples = await scrape(bot)
    assert value(samples, "callbot_evovoice_errors_total",
                 method="POST", route="/sessions/outgoing", kind=kind) == 1
    if kind == "bad_login":
        assert value(samples, "callbot_evovoice_errors_total",
                     method="POST", route="/auth/credentials", kind=kind) == 1
    assert value(samples, "callbot_calls_total", outcome=outcome.value) == 1


async def test_every_way_a_request_ends_is_counted(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=policy_with(per_user="2/10m"))
    await bot.command("history")
    await bot.command("")  # the form
    await bot.command(f"{FULL} escalation")  # placed
    await bot.settle()
    await bot.command(f"{FULL} escalation")  # the same number again: "are you sure?"
    # Asked before the next call takes the limit's last slot: a question whose Yes the full
    # limit would refuse is not asked (that refusal comes at once).
    await bot.settle()
    again = slash_command_body(text="+18144043094 escalation",
                               response_url=bot.slack.response_url(), trigger_id="5.6.again")
    await bot.post_signed(again)  # placed
    await bot.settle()
    await bot.post_signed(again)  # redelivered: a duplicate
    await bot.settle()
    await bot.command("+18144043095 escalation")  # a third call in 10 minutes: refused
    await bot.settle()
    samples = await scrape(bot)
    for outcome, count in (("subcommand", 1), ("form", 1)):
        assert value(samples, "callbot_commands_total", command="/call", outcome=outcome) == count
    for outcome, count in (("placed", 2), ("confirming", 1), ("duplicate", 1), ("refused", 1)):
        assert value(samples, "callbot_calls_total", outcome=outcome) == count, outcome
    assert value(samples, "callbot_rate_limit_refusals_total", limit="per_user") == 1
    # The escalations' endings and ways of acknowledging are there from the start, at 0, for
    # rate() to work.
    assert ("callbot_escalations_total", frozenset({("outcome", "exhausted")})) in samples
    assert ("callbot_oncall_acknowledgements_total", frozenset({("via", "answer")})) in samples


async def test_each_bot_counts_for_itself(bot_factory: BotFactory) -> None:
    first = await bot_factory("http")
    second = await bot_factory("socket")
    await first.command(f"{FULL} escalation")
    await first.settle()
    assert value(await scrape(first), "callbot_calls_total", outcome="placed") == 1
    assert value(await scrape(second), "callbot_calls_total", outcome="placed") == 0


def test_rate_limit_refusals_have_a_counter_for_the_limits_to_use() -> None:
    metrics = Metrics()
    metrics.rate_limit_refused("per_user")
    metrics.rate_limit_refused("per_user")
    metrics.rate_limit_refused("per_number")
    from prometheus_client import generate_latest

    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "callbot_rate_limit_refusals_total", limit="per_user") == 2
    assert value(samples, "callbot_rate_limit_refusals_total", limit="per_number") == 1


@pytest.mark.parametrize(
    ("body", "kind"),
    [({"command": "/call", "text": "x"}, "slash_command"),
     ({"type": "view_submission"}, "view_submission"),
     ({"type": "block_actions"}, "block_actions"),
     ({"type": "block_suggestion"}, "block_suggestion"),
     ({"type": "view_closed"}, "view_closed"),
     ({"type": "shortcut"}, "shortcut"),
     ({"type": "message_action"}, "message_action"),
     ({"type": "event_callback", "event": {}}, "event"),
     ({"type": "something new"}, "other"),
     ({"type": ["block_actions"]}, "other"),
     ({}, "other")],
)
def test_request_kinds_are_a_small_fixed_set(body: dict[str, object], kind: str) -> None:
    assert request_kind(body) == kind


async def test_evovoice_observer_sees_each_attempt_with_ids_folded(evo: EvoVoiceStandIn) -> None:
    seen: list[RequestObserved] = []
    session = evo.add_session()
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD, observer=seen.append) as client:
        await client.get_session(session["id"])
    [observed] = seen
    assert (observed.method, observed.route, observed.status, observed.error) == (
        "GET", "/sessions/{id}", 200, None)
    assert observed.seconds >= 0


async def test_evovoice_observer_counts_every_failed_connect() -> None:
    seen: list[RequestObserved] = []

    async def no_wait(_: float) -> None:
        return None

    client = EvoVoiceClient("http://127.0.0.1:9", "u", "p", connect_retries=3, sleep=no_wait,
                            observer=seen.append, timeout=httpx.Timeout(2.0))
    with pytest.raises(Exception):
        await client.auth_status()
    await client.aclose()
    assert [o.error for o in seen] == ["unreachable"] * 3


@pytest.mark.parametrize(("behaviour", "status", "error"), [
    (DropConnection(), None, "connection_lost"),
    (Delayed(5.0), None, "timeout"),
    (ErrorStatus(503), 503, "server_error"),
    (ErrorStatus(403, "Invalid Role"), 403, "missing_role"),
    (ErrorStatus(403, "Access denied", "Forbidden"), 403, "forbidden"),
    (TooManyRequests(), 429, "rate_limited"),
])
async def test_evovoice_observer_names_how_a_call_failed(
    evo: EvoVoiceStandIn, behaviour: Behaviour, status: int | None, error: str
) -> None:
    seen: list[RequestObserved] = []
    evo.queue_outgoing(behaviour)
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD, observer=seen.append,
                              timeout=httpx.Timeout(0.5)) as client:
        with pytest.raises(EvoVoiceError):
            await client.create_outgoing_session("flow-esc", "+18144043093")
    assert [(o.route, o.status, o.error) for o in seen] == [("/sessions/outgoing", status, error)]


async def test_a_failing_observer_never_breaks_a_request(evo: EvoVoiceStandIn) -> None:
    def broken(_: RequestObserved) -> None:
        raise RuntimeError("metrics backend exploded")

    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD, observer=broken) as client:
        status = await client.auth_status()
    assert status.is_authenticated


async def test_openmetrics_when_the_scraper_asks_for_it(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    async with bot.http.get(f"http://127.0.0.1:{bot.runtime.port}/metrics",
                            headers={"Accept": "application/openmetrics-text"}) as response:
        assert response.status == 200
        assert response.content_type == "application/openmetrics-text"
        assert (await response.text()).rstrip().endswith("# EOF")


def documented_metrics() -> dict[str, set[str]]:
    """README's metrics table: each metric's name and its labels (the words in backquotes outside
    the parentheses that list their values)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| `(callbot_\w+)` \| (.*?) \|", readme, re.MULTILINE)
    return {name: set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels)))
            for name, labels in rows}


def test_the_metrics_are_named_and_labelled_as_the_readme_says() -> None:
    documented = documented_metrics()
    assert len(documented) >= 10
    metrics = Metrics()
    wrappers = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    exposed: dict[str, set[str]] = {}
    for wrapper in wrappers:
        [family] = wrapper.describe()
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = documented.get(name)
        if labels:  # a series with the documented labels (a wrong name is refused)
            wrapper.labels(**dict.fromkeys(labels, "x"))
        exposed[name] = set()
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        for sample in family.samples:
            exposed[name] |= set(sample.labels) - {"le"}
    assert exposed == documented
