"""Every error callbot shows a person, drawn in one tree; the words for each; the reference id.

    CallbotError                    a request refused or not completed; `.user_message` says why
     ├─ RoleDenied                  the requester holds none of the roles the action needs
     ├─ NotAResponder               access.py: not allowed to escalate to on-call (responders)
     ├─ MembershipUnknown           access.py: Slack did not say whether someone is a full member
     ├─ GroupLookupFailed           Slack would not tell us a user group's members
     ├─ FlowNotFound                no flow matches the word typed (with the closest names)
     ├─ FlowAmbiguous               several flows match it
     ├─ CallerIdNotOwned            the caller ID is not one of the account's numbers
     ├─ CannotNotify                nobody can be told of the call, so nothing was dialled
     ├─ DatabaseUnavailable         the database failed before anything was dialled
     ├─ OnCallNotConfigured         the policy file has no [oncall] section
     ├─ EscalationLimitReached      a responder without a role started their escalations' worth
     ├─ AlreadyEscalating           another escalation is still paging on-call in that thread
     ├─ NoUsableNumber              a person has no phone number the bot may dial
     ├─ CalledOff                   an escalation's step not dialled: the chain went on without it
     │   ├─ StepTakenOver             oncall/step_claims.py: the step was taken over by another
     │   │                            run (a stalled replica's); this one dials nothing
     │   └─ ChainNotRunning           oncall/step_claims.py: the escalation was stopped or
     │                                acknowledged before its step's call was recorded, or
     │                                dialled again after a "not now": no dial
     ├─ NumberRejected              phone.py: a number that must not be dialled (`.code`, `.reason`)
     ├─ CommandRejected             calls/command_text.py: /call text that can't be understood
     ├─ HistoryFilterRejected       audit/history.py: a /call history filter that can't be used
     ├─ LimitReached                calls/limits.py: a rate limit refuses the call (`.retry_after`)
     ├─ ButtonExpired               calls/controls.py: the call buttons' refusals ...
     │   └─ EscalationButtonExpired   … and an escalation's button that no longer works
     ├─ ButtonNotReady                clicked before the bot wrote down its message's ts
     ├─ NotAllowedOnCall              the clicker neither placed the call nor manages
     ├─ CallNotLive                   nothing to hang up
     ├─ CallStillLive                 hang up before calling again
     ├─ AlreadyCalledAgain            one click dials once
     ├─ SomeoneElsesTest              Call again on another person's /call test call
     ├─ NoLongerTheirNumber           … on your own, when your number is another now
     ├─ CallTooOld                    the number is no longer kept
     ├─ FlowGone                      Call again on a call whose flow left the account
     ├─ HangUpFailed                  Evo Voice did not hang up
     ├─ NotAllowedToStop            oncall/escalation.py: Stop escalation by someone who may not
     ├─ EscalationOver                and on an escalation that already ended
     ├─ NotAllowedToAcknowledge       I'm on it by someone neither paged nor allowed to escalate
     ├─ AlreadyAcknowledged           somebody acknowledged first (who, when)
     └─ AcknowledgedTooLate           the escalation was stopped or failed: nothing to acknowledge

    EvoVoiceError                   evovoice/client.py: the voice API failed; `.message`
     ├─ EvoVoiceUnreachable         the connection never opened: nothing was sent
     ├─ OutcomeUnknown              the call may or may not have been placed: never retried
     │   └─ ConflictPlacing         … answered 409, a conflict met maybe after the call rang
     ├─ EvoVoiceTimeout             a GET or DELETE got no answer
     ├─ MalformedResponse           a 2xx whose body is not what the API documents
     ├─ AlreadyEnded                a hang-up refused for a call whose session says it ended
     ├─ StillGoingOn                a hang-up answered 404 for a call whose session goes on
     └─ EvoVoiceStatusError         a non-2xx answer (`.status`)
         ├─ BadRequest              400
         ├─ BadLogin                401 or /auth/status saying "not authenticated", once a sign-in
         │                          with POST /auth/credentials is refused too
         ├─ Forbidden               403 for another reason than a role
         │   └─ MissingRole         403 "Invalid Role" (`.needed`)
         ├─ NotFound                404
         ├─ Conflict                409
         ├─ RateLimited             429 (`.retry_after`)
         └─ ServerError             5xx on a request that cannot have placed a call

The voice client's tree stands apart because the client is a library of its own (it knows
nothing of Slack or of the people asking). `Expected` is both roots: what a request may meet.

Words and logs are two steps. `describe()` gives the words for an expected error and has no side
effect. Anything else is a bug: `log_unexpected()` logs it under a reference id and returns the
words that give the person that reference. `describe_any()` does whichever applies, for the
places that catch everything so that nobody is left without an answer.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping, Sequence

from bot.evovoice import client as evovoice
from bot.ops.logs import current_request_id
from bot.slack.blocks import Markup, listing, quoted

logger = logging.getLogger(__name__)

# A refusal names what would have been accepted, but a long account (250 numbers, 400 flows) must
# not push the message past what Slack shows (3,000 characters a text): the rest is "and N more".
MAX_LISTING_CHARS = 1200


class CallbotError(Exception):
    user_message: str = "Something went wrong."

    def __init__(self, user_message: str | None = None) -> None:
        if user_message is not None:
            self.user_message = user_message
        super().__init__(self.user_message)


class RoleDenied(CallbotError):
    def __init__(self, required: Sequence[str], action: str = "place calls") -> None:
        self.required = tuple(required)
        super().__init__(
            f"You are not allowed to {action}: it needs the {' or '.join(self.required)} role. "
            "Ask an administrator of callbot to add you (or one of your user groups) to the "
            "policy file."
        )


class NotAResponder(CallbotError):
    def __init__(self, action: str = "escalate to on-call", *, listed_only: bool = False) -> None:
        who = ("the people listed under [oncall] responders, the rotation and the Manager or "
               "SystemAdministrator role holders" if listed_only else
               "the workspace's full members (not guests or people from other organisations, "
               "unless listed under [oncall] responders) and the rotation")
        super().__init__(
            f"You are not allowed to {action}: only {who} may. Ask an administrator of callbot "
            "to add you to [oncall] responders in the policy file."
        )


def _when(retry_after: float | None) -> str:
    """When to try again: Slack's Retry-After in whole seconds (never "0 s"), else in a minute."""
    return "a minute" if retry_after is None else f"{max(1, math.ceil(retry_after))} s"


class MembershipUnknown(CallbotError):
    def __init__(
        self, reason: str, action: str = "escalate to on-call", retry_after: float | None = None,
    ) -> None:
        self.reason, self.retry_after = reason, retry_after  # Slack's 429: seconds to wait
        super().__init__(
            f"I could not check whether you may {action}: Slack did not tell me who you are "
            f"({reason}). Try again in {_when(retry_after)}."
        )


class GroupLookupFailed(CallbotError):
    def __init__(self, group_id: str, reason: str, retry_after: float | None = None) -> None:
        self.group_id, self.reason = group_id, reason  # Slack's error code
        self.retry_after = retry_after  # Slack's 429: seconds to wait
        scope = ("" if retry_after is not None else "; if it persists, an administrator should "
                 "check that the bot has the usergroups:read scope")
        super().__init__(f"I could not check your membership of user group {group_id} "
                         f"({reason}). Try again in {_when(retry_after)}{scope}.")


class FlowNotFound(CallbotError):
    def __init__(self, text: str, suggestions: Sequence[str]) -> None:
        self.text = text
        self.suggestions = tuple(suggestions)
        names = listing([quoted(name) for name in self.suggestions], MAX_LISTING_CHARS)
        hint = (f"Closest flows: {names}." if self.suggestions
                else "The account has no flows that callbot can use.")
        super().__init__(f"No flow is called “{text}”. {hint} Use a flow's name or its slug "
                         "(wake-up-call for “Wake Up Call”).")


class FlowAmbiguous(CallbotError):
    def __init__(self, text: str, candidates: Sequence[str]) -> None:
        self.text = text
        self.candidates = tuple(candidates)
        super().__init__(
            f"“{text}” matches several flows: "
            + listing([quoted(name) for name in self.candidates], MAX_LISTING_CHARS)
            + ". Ask an administrator to give each a distinct alias in the policy file's [flows]."
        )


class CallerIdNotOwned(CallbotError):
    """`default`: the caller ID is the policy's `default_caller_id`, which no requester typed."""

    def __init__(self, masked: str, owned: Sequence[str], *, default: bool = False) -> None:
        numbers = listing(owned, MAX_LISTING_CHARS)
        if default:
            super().__init__(
                f"The default caller ID {masked} (default_caller_id in the policy file) is not one "
                "of the account's phone numbers, so nothing was dialled. Ask an admin to set it "
                f"to one of them: {numbers}."
            )
            return
        super().__init__(
            f"{masked} is not one of the account's phone numbers, so it can't be the caller ID. "
            f"Owned numbers: {numbers}. Leave it out to use the default."
        )


class CannotNotify(CallbotError):
    user_message = (
        "I could not post the call's confirmation anywhere, so I did not dial. Invite the bot to "
        "the channel (/invite @callbot) and try again."
    )


class OnCallNotConfigured(CallbotError):
    user_message = (
        "No on-call rotation is set up. An administrator must add an [oncall] section (flow and "
        "rotation) to the policy file."
    )


class EscalationLimitReached(CallbotError):
    """`[oncall] escalations_per_person`: `count` escalations in the last `window` (in words)."""

    def __init__(self, count: int, window: str, again_in: str | None = None) -> None:
        """`again_in`: when they may start another, in words ("12 min")."""
        self.count = count
        self.window = window
        again = f"; you may start another in {again_in}" if again_in else ""
        super().__init__(
            f"You have started {count} escalation{'s' if count != 1 else ''} in the last {window}, "
            "the most allowed without "
            f"a Manager or SystemAdministrator role ([oncall] escalations_per_person){again}. "
            "Nobody was called: ask someone with a role to escalate, or reach the people on call "
            "another way."
        )


class AlreadyEscalating(CallbotError):
    """An escalation by `requester_id` is still paging on-call in the thread: no second one."""

    def __init__(self, requester_id: str, *, yours: bool = False) -> None:
        self.requester_id = requester_id
        then = ("is still paging on-call in this thread. Nobody else was called: follow it in the "
                "thread, or stop it there to start a new one.")
        # A form's error is plain text, where a mention would show as <@U…>.
        whose = "Your" if yours else "Another responder's"
        self.in_form = f"{whose} escalation {then}"
        whose = "Your" if yours else f"<@{requester_id}>'s"
        super().__init__(Markup(f"{whose} escalation {then}"))


class CalledOff(CallbotError):
    """An escalation step's call not dialled because the chain went on without it (stopped,
    acknowledged, or taken over by another run): counted and audited as `called_off`, not as a
    call that failed."""


class StepTakenOver(CalledOff):
    user_message = (
        "Another callbot replica took this on-call step over and dials it, so this one did not."
    )


class ChainNotRunning(CalledOff):
    """The escalation was stopped or acknowledged while its step's call was about to be placed
    (its checks waiting on Slack): nobody more is rung (bot/oncall/step_claims.py)."""

    user_message = (
        "The on-call escalation was stopped or acknowledged, so this step was not dialled."
    )


class NoUsableNumber(CallbotError):
    def __init__(self, user_id: str, problem: str, action: str) -> None:
        self.user_id = user_id
        self.problem = problem
        super().__init__(
            f"You can't {action} without a phone number the bot can dial ({problem}). Add your "
            "number to your Slack profile, or ask an administrator to list you under [people] "
            "in the policy file."
        )


class DatabaseUnavailable(CallbotError):
    """The database failed (locked past the busy timeout, full, read-only) before the request
    did anything: `not_done` says what was not done ("nothing was dialled"); the reference finds
    the log line with the database's own words."""

    def __init__(
        self, reference: str, not_done: str = "nothing was dialled", *, reading: bool = False
    ) -> None:
        self.reference = reference
        verb = "read" if reading else "write to"
        super().__init__(
            f"callbot could not {verb} its database, so {not_done} (reference "
            f"{reference}). Try again in a minute; if it persists, tell the callbot operators."
        )


def reference_id() -> str:
    """The Slack request's own id when there is one, so the user's reference finds its log lines."""
    return current_request_id() or secrets.token_hex(4)


Expected = CallbotError | evovoice.EvoVoiceError

_UNKNOWN = ("⚠️ Outcome unknown: Evo Voice {}, so the call may or may not have been placed. I "
            "did not retry, to avoid ringing twice. Check the call log in Evo Voice before "
            "calling again.")
# The voice API's failures in fixed words, by class (MissingRole before Forbidden); else its own.
_VOICE_WORDS: dict[type[evovoice.EvoVoiceError], str] = {
    evovoice.OutcomeUnknown: _UNKNOWN.format("did not answer clearly"),
    evovoice.EvoVoiceUnreachable: (
        "Evo Voice could not be reached, so nothing was dialled. Try again in a minute; if "
        "it persists, check the voice service's status."
    ),
    evovoice.BadLogin: (
        "The bot's Evo Voice login was refused, so nothing was dialled. An operator must fix "
        "EVOVOICE_USERNAME / EVOVOICE_PASSWORD, or EVOVOICE_URL (`callbot check` says which)."
    ),
    evovoice.MissingRole: (
        "The bot's Evo Voice login lacks the Manager role, so nothing was dialled. An operator "
        "must grant it in Evo Voice."
    ),
}


def describe(exc: Expected) -> str:
    """Plain words for the requester: what happened and what to do next. No side effects."""
    if isinstance(exc, CallbotError):
        return exc.user_message
    if isinstance(exc, evovoice.MissingRole) and exc.needed == (evovoice.HANG_UP_ROLE,):
        return (
            f"{exc.message} An operator can grant the bot's Evo Voice login the "
            f"{evovoice.HANG_UP_ROLE} role."
        )
    if isinstance(exc, evovoice.ConflictPlacing):
        return _UNKNOWN.format(f"refused the call with a conflict ({exc.said}), an answer it may "
                               "give after placing the call")
    words = next((_VOICE_WORDS[c] for c in type(exc).__mro__ if c in _VOICE_WORDS), None)
    if words is not None:
        return words
    if isinstance(exc, evovoice.RateLimited):
        wait = f" in {int(exc.retry_after + 0.999)} s" if exc.retry_after else " shortly"
        return f"Evo Voice is rate-limiting calls, so nothing was dialled. Try again{wait}."
    if isinstance(exc, evovoice.Forbidden):
        return (
            f"Evo Voice refused the request ({exc.status_and_words}); this is not a missing role. "
            "Nothing was dialled. Tell the callbot operators."
        )
    if isinstance(exc, evovoice.EvoVoiceStatusError):
        return f"Evo Voice refused the call: {_sentence(exc.message)} Nothing was dialled."
    return f"Evo Voice failed: {_sentence(exc.message)} Try again in a minute."


def describe_hang_up(exc: evovoice.EvoVoiceError) -> str:
    """Why Evo Voice did not end a call, in plain words: describe() speaks of a call being placed
    ("Evo Voice refused the call … Nothing was dialled"), wrong of a call that may still ring."""
    if isinstance(exc, evovoice.MissingRole) and exc.needed == (evovoice.HANG_UP_ROLE,):
        return describe(exc)
    return _sentence(exc.message)


# Why a lookup that found nothing can't say the call was not placed (bot/evovoice/finding.py).
INCOMPLETE_LOOKUP = ("Evo Voice lists more sessions to this number (calls, texts) than I can read "
                     "through, and the call was not among those I read.")


def describe_reading(exc: evovoice.EvoVoiceError) -> str:
    """Why a placed call's status can't be read from Evo Voice, and who can fix it: describe()
    speaks of a call being placed ("Nothing was dialled"), wrong of a call under way."""
    if isinstance(exc, evovoice.BadLogin):
        return ("Evo Voice refuses the bot's login (was its password changed?). An operator must "
                "fix EVOVOICE_USERNAME / EVOVOICE_PASSWORD (`callbot check` says which).")
    if isinstance(exc, evovoice.MissingRole):
        return ("The bot's Evo Voice login lacks the Manager role needed to read calls. An "
                "operator must grant it in Evo Voice.")
    if isinstance(exc, evovoice.Forbidden):
        return (f"Evo Voice refuses to show it ({_sentence(exc.status_and_words)}) Tell the "
                "callbot operators.")
    if isinstance(exc, evovoice.ServerError):
        return f"Evo Voice is failing (HTTP {exc.status}: {_sentence(exc.message)})"
    if isinstance(exc, evovoice.MalformedResponse):
        return (f"Evo Voice's answers can't be read ({_sentence(exc.message)}) Tell the callbot "
                "operators.")
    if isinstance(exc, evovoice.EvoVoiceUnreachable | evovoice.EvoVoiceTimeout):
        return f"Evo Voice does not answer: {_sentence(exc.message)}"
    return f"Evo Voice answers with an error: {_sentence(exc.message)}"


def _sentence(text: str) -> str:
    """``text`` ending in one full stop: the server's messages and the client's own often have
    theirs already."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def log_unexpected(
    exc: BaseException, what: str = "unexpected error", *,
    extra: Mapping[str, object] | None = None,
) -> str:
    """Log a bug with its traceback under a reference id (`extra`: the line's structured fields,
    escalation_id, call_id…); return the words that give it."""
    ref = reference_id()
    logger.error("%s, reference %s", what, ref, exc_info=exc, extra=dict(extra or {}))
    return unexpected_words(ref)


def unexpected_words(ref: str) -> str:
    return f"Something went wrong on our side (reference {ref}). Tell the callbot operators."


def describe_any(exc: BaseException) -> str:
    """describe() an expected error; log anything else (log_unexpected) and give its reference."""
    if isinstance(exc, Expected):
        return describe(exc)
    return log_unexpected(exc)
