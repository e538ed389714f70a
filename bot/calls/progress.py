"""What a session says about a call: ringing, answered, ended, and how long it lasted.

The bot's reading of Evo Voice's session fields (docs/evovoice-api.md; README, "What the bot relies
on"), shared by followed calls and escalation steps.
"""

from __future__ import annotations

from bot.calls.store import CallState
from bot.evovoice.client import Session
from bot.evovoice.dates import parse_timestamp
from bot.phone import mask_numbers_in

MAX_OUTCOME_CHARS = 200

_LIVE = frozenset({CallState.RINGING, CallState.CONNECTED})


def classify(
    session: Session, previous: str | None = None, *, patched: bool = False
) -> CallState:
    """The bot's reading of a session (docs/evovoice-api.md; README, "What the bot relies on").

    `ended` and `callState` decide; `dateCompleted` only confirms an end `callState` already says:

        ended true                                        ENDED, whatever else the session says
        callState Connected or Hold                       CONNECTED (the only sign of an answer)
        callState Ringing                                 RINGING
        callState Disconnected, and the call was seen ringing or connected before, or
            dateCompleted is a real time                  ENDED (but see `patched`)
        no callState, or Passive, after the call was seen ringing or connected
                                                          as last seen (no news)
        anything else (no callState, Passive, Disconnected before anything happened)   CALLING

    `patched`: the bot itself sent PatchSession `{"callState": "Disconnected"}` to hang the call
    up. That it ends the call is only likely (docs/evovoice-api.md, Hang up): a server that merely
    stores the field would echo it while the call goes on, so then only `ended` or a real
    `dateCompleted` ends it, and a call seen ringing or connected stays so.

    `dateCompleted` alone never ends a call (it may be a placeholder); `answeredByName` never
    answers one (it may be filled while the phone still rings): see `answered_by`.
    """
    if session.ended:
        return CallState.ENDED
    state = (session.call_state or "").casefold()
    if state in ("connected", "hold"):
        return CallState.CONNECTED
    if state == "ringing":
        return CallState.RINGING
    if state == "disconnected":
        if parse_timestamp(session.date_completed) is not None:
            return CallState.ENDED
        if previous in _LIVE:
            # What the bot patched in is no news: the call is as it was last seen.
            return CallState(previous) if patched else CallState.ENDED
    elif previous in _LIVE:
        # Passive (nothing public says what it means) or a read without callState: no sign the
        # call was answered, nor that it went back to calling. Read as "calling", a call seen live
        # would show "Calling…" after its answer, and the Disconnected that follows would not
        # end it (it ends a call seen ringing or connected).
        return CallState(previous)
    return CallState.CALLING


def says_neither(session: Session) -> bool:
    """Not ended, and a callState that says neither ringing nor answered nor over: Passive
    (nothing public says what it means), another value, or none (`classify`: no news)."""
    state = (session.call_state or "").casefold()
    return not session.ended and state not in ("ringing", "connected", "hold", "disconnected")


def shows_answer(session: Session) -> bool:
    """callState Connected or Hold: the one sign of an answer, even on a read that has `ended`
    set already (ended flipping before callState, or answered and over between two polls)."""
    return (session.call_state or "").casefold() in ("connected", "hold")


def answered_by_name(session: Session, answered: bool) -> str | None:
    """`answeredByName`, once the call is known to be answered; a hint, never the evidence."""
    return clip(session.answered_by_name) if answered else None


def duration_of(session: Session) -> float | None:
    """From creation to completion, by Evo Voice's own clock (ringing included)."""
    created = parse_timestamp(session.date_created)
    completed = parse_timestamp(session.date_completed)
    if created is None or completed is None or completed < created:
        return None
    return (completed - created).total_seconds()


def clip(text: str | None) -> str | None:
    """Evo Voice's words about a call (who answered, the outcome) as the bot keeps them: any phone
    number in them masked (the call's row outlives the 24 hours its own number is kept), trimmed
    and clipped."""
    if not text:
        return None
    text = mask_numbers_in(text).strip()
    return text if len(text) <= MAX_OUTCOME_CHARS else text[: MAX_OUTCOME_CHARS - 1] + "…"

