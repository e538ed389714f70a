"""What a call is while it is being decided and placed: the request, the checked call, the outcome.

A leaf: these value types import nothing of the calls feature, so the use case (service), the
follower, the audit trail and the views can all speak of a call without importing one another.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from bot.errors import Expected
from bot.evovoice.client import Session
from bot.phone import DialableNumber
from bot.slack.threads import Thread
from bot.storage.claims import Untold

# How far back a session may have been created to count as the one an ambiguous attempt placed.
AMBIGUOUS_LOOKUP_SLACK = dt.timedelta(seconds=30)


# The origin of a call placed by `/call test`, which rings only its requester (CallControls).
TEST_ORIGIN = "test"
CALL_AGAIN_ORIGIN = "call_again"
# An escalation step's call: its card and pages tell it (bot/oncall), it posts nothing itself.
ESCALATION_ORIGIN = "escalation"


@dataclass(frozen=True)
class CallRequest:
    """What someone asked for, as typed; nothing in it is trusted yet."""

    team_id: str
    user_id: str
    channel_id: str
    number_text: str
    flow_text: str
    caller_id_text: str | None = None
    reason: str | None = None
    response_url: str | None = None
    # Posts `response_url` carried already (a question's "Confirmed"): of Slack's five, fewer are
    # left for the call's news, and the last of them must still be there for the outcome.
    response_url_used: int = 0
    thread_ts: str | None = None
    # Same key, same request: a redelivered or double-submitted request is placed at most once.
    idempotency_key: str | None = None
    # Claim the key only once the checks pass, so a refused or failed check doesn't use it up
    # (Call again: one click dials once, but a click refused for a passing reason may be retried).
    claim_after_check: bool = False
    origin: str = "command"  # for the audit trail: command, call_again, …
    repeat_of: int | None = None  # audit id of the attempt this one repeats
    # Audit id of the question (an `asked` attempt) whose Call this request is (questions.py).
    confirmed_question: int | None = None
    # Questions the requester already answered "Call" to (see confirmations.Reason).
    confirmed: frozenset[str] = frozenset()
    # The note its claim keeps of whom to tell until its call's row is written (calls/untold.py).
    untold: Untold | None = None


@dataclass(frozen=True)
class CheckedCall:
    request: CallRequest
    number: DialableNumber
    flow_id: str
    flow_name: str
    caller_id: str | None


class Outcome(StrEnum):
    PLACED = "placed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    REFUSED = "refused"
    UNTOLD = "untold"  # nobody could be told, so nothing was dialled
    DUPLICATE = "duplicate"  # the same request was already handled
    CONFIRMING = "confirming"  # the requester was asked "are you sure?"; nothing dialled yet
    # An escalation step not dialled: the escalation was stopped or acknowledged, or another run
    # took the step over, as its call was about to be placed (bot.errors.CalledOff).
    CALLED_OFF = "called_off"


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    session_id: str | None = None
    thread: Thread | None = None
    error: Expected | None = None
    session: Session | None = None  # the session as Evo Voice last showed it, when it did
    call_id: int | None = None  # the followed call's row (bot.callstore), when there is one


# Outcomes after which the call certainly did not ring: its rate-limit slot is given back.
# (UNTOLD only in records made before calls were dialled first: nothing ends so now.)
NOT_DIALLED = frozenset({Outcome.FAILED, Outcome.UNTOLD, Outcome.CALLED_OFF})
