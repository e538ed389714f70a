"""Prometheus metrics, served at `GET /metrics`; one registry per running bot, not the global one.

    callbot_commands_total{command, outcome}            slash commands by what their ack did
    callbot_calls_total{outcome}                        call requests by final outcome
    callbot_slack_ack_seconds{kind}                     a Slack request's receipt → its ack
    callbot_evovoice_request_seconds{method, route}     every HTTP attempt to Evo Voice
    callbot_evovoice_errors_total{method, route, kind}  failed attempts, by kind of failure
    callbot_rate_limit_refusals_total{limit}            requests refused by callbot's own limits
    callbot_escalations_total{outcome}                  on-call escalations, by how they ended
                                                        (outcome="exhausted": nobody acknowledged)
    callbot_oncall_pages_total                          people paged (their step began: DM, call)
    callbot_oncall_acknowledgements_total{via}          escalations acknowledged: button, outcome
                                                        (the call's flow), answer (ack = "answer")
    callbot_oncall_time_to_acknowledge_seconds          escalation start → first acknowledgement

Labels hold only bounded sets (outcomes, request kinds, routes with ids replaced by `{id}`), never a
user, a number or a channel. To count a rate-limit refusal, call
`services.metrics.rate_limit_refused("per_user")` (the label names the limit that refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

from bot.calls.models import CallResult, Outcome
from bot.evovoice.client import RequestObserved

# Slack's deadline is 3 s; the buckets are dense below it.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
EVOVOICE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0)

# An on-call page is acknowledged within minutes, or the chain has long moved on.
ACKNOWLEDGE_BUCKETS = (10.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)

# How an escalation can end (bot.escalation.EscalationState's final states).
ESCALATION_OUTCOMES = ("acknowledged", "answered", "stopped", "exhausted", "failed")
# How an acknowledgement came (bot.oncall.escalation_store.AckVia).
ACKNOWLEDGED_VIA = ("button", "outcome", "answer")

_INTERACTIVE_KINDS = frozenset({
    "block_actions", "block_suggestion", "view_submission", "view_closed", "shortcut",
    "message_action",
})


class CommandOutcome(StrEnum):
    ACCEPTED = "accepted"  # acked; the work goes on in the background
    HELP = "help"  # answered with usage in the ack
    INVALID = "invalid"  # refused in the ack (unparseable text)
    UNAVAILABLE = "unavailable"  # refused because the bot is shutting down
    FORM = "form"  # acked; the call form opens
    SUBCOMMAND = "subcommand"  # /call history, /call oncall


def request_kind(body: Mapping[str, Any]) -> str:
    """What kind of Slack request a parsed body is (a slash command's form or a payload)."""
    if "command" in body:
        return "slash_command"
    kind = body.get("type")
    if kind == "event_callback":
        return "event"
    if isinstance(kind, str) and kind in _INTERACTIVE_KINDS:  # a list or an object: no kind
        return kind
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "callbot_commands", "Slash commands, by what their ack did.",
            ["command", "outcome"], registry=self.registry,
        )
        self.calls = Counter(
            "callbot_calls", "Call requests, by final outcome.", ["outcome"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "callbot_slack_ack_seconds",
            "Seconds from receiving a Slack request to acknowledging it.",
            ["kind"], buckets=ACK_BUCKETS, registry=self.registry,
        )
        self.evovoice_seconds = Histogram(
            "callbot_evovoice_request_seconds", "Seconds per HTTP attempt to Evo Voice.",
            ["method", "route"], buckets=EVOVOICE_BUCKETS, registry=self.registry,
        )
        self.evovoice_errors = Counter(
            "callbot_evovoice_errors", "Failed HTTP attempts to Evo Voice, by kind.",
            ["method", "route", "kind"], registry=self.registry,
        )
        self.rate_limit_refusals = Counter(
            "callbot_rate_limit_refusals", "Requests refused by callbot's own rate limits.",
            ["limit"], registry=self.registry,
        )
        self.escalations = Counter(
            "callbot_escalations", "On-call escalations, by how they ended.", ["outcome"],
            registry=self.registry,
        )
        self.pages = Counter(
            "callbot_oncall_pages", "People paged by an on-call escalation (a step began).",
            registry=self.registry,
        )
        self.acknowledgements = Counter(
            "callbot_oncall_acknowledgements", "On-call escalations acknowledged, by how.",
            ["via"], registry=self.registry,
        )
        self.time_to_acknowledge = Histogram(
            "callbot_oncall_time_to_acknowledge_seconds",
            "Seconds from the start of an on-call escalation to its acknowledgement.",
            buckets=ACKNOWLEDGE_BUCKETS, registry=self.registry,
        )
        # The children every Slack request counts in, once looked up: labels() checks its values
        # and takes a lock each time (3-4 µs of the HTTP route's 75-80 µs a /call).
        self._commands: dict[tuple[str, str], Counter] = {}
        self._acks: dict[str, Histogram] = {}
        # Known label values start at 0, so a rate() over them works before the first event.
        for outcome in Outcome:
            self.calls.labels(outcome.value)
        for ending in ESCALATION_OUTCOMES:
            self.escalations.labels(ending)
        for via in ACKNOWLEDGED_VIA:
            self.acknowledgements.labels(via)

    def command(self, command: str, outcome: CommandOutcome) -> None:
        key = (command, outcome.value)
        child = self._commands.get(key)
        if child is None:
            child = self._commands[key] = self.commands.labels(*key)
        child.inc()

    def call_finished(self, result: CallResult) -> None:
        self.calls.labels(result.outcome.value).inc()

    def slack_acked(self, kind: str, seconds: float) -> None:
        child = self._acks.get(kind)
        if child is None:
            child = self._acks[kind] = self.ack_seconds.labels(kind)
        child.observe(seconds)

    def evovoice_request(self, observed: RequestObserved) -> None:
        self.evovoice_seconds.labels(observed.method, observed.route).observe(observed.seconds)
        if observed.error is not None:
            self.evovoice_errors.labels(observed.method, observed.route, observed.error).inc()

    def rate_limit_refused(self, limit: str) -> None:
        self.rate_limit_refusals.labels(limit).inc()

    def escalation_finished(self, outcome: str) -> None:
        self.escalations.labels(outcome).inc()

    def oncall_paged(self) -> None:
        self.pages.inc()

    def oncall_acknowledged(self, via: str, seconds: float) -> None:
        self.acknowledgements.labels(via).inc()
        self.time_to_acknowledge.observe(seconds)

    async def serve(self, request: web.Request) -> web.Response:
        """`GET /metrics`: Prometheus' text format, or OpenMetrics when the scraper asks for it."""
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})
