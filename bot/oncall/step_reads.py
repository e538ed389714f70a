"""A step's call read afresh from Evo Voice, where the follower's last poll (seconds old) is not
enough: at the step's deadline, as its escalation is stopped or acknowledged, for a page sent
again by a run that didn't dial the call, and right after Evo Voice accepted hanging it up."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot.calls.follow import classify
from bot.calls.progress import says_neither, shows_answer
from bot.calls.store import FINAL_STATES, CallState, CallStore, TrackedCall
from bot.evovoice.client import (
    EvoVoiceClient, EvoVoiceError, NotFound, Priority, Session, StillGoingOn)
from bot.oncall.escalation_store import Escalation
from bot.storage.faults import until_database_answers

logger = logging.getLogger(__name__)

# The step's note when the deadline's read failed: the call is left on rather than cut off.
UNREAD_AT_DEADLINE = ("(Evo Voice could not say whether it was answered, so it was not hung up: "
                      "it may still ring.)")


# Reads of a call's session once Evo Voice accepted hanging it up, a pause apart: a server may end
# the call a moment after it answers, or never (a PatchSession that only stores the field sent).
HANG_UP_READS = 3
UNENDED = "Evo Voice accepted hanging it up, yet still shows it going on."
# Who hung a step's call up, on its row: the escalation itself (its deadline, Stop, I'm on it).
# Its calls have no status message to say so in; the follower reads it as "the bot hung it up".
HUNG_UP_BY_CHAIN = "escalation"


async def hang_up_and_check(
    evo: EvoVoiceClient, calls: CallStore, call: TrackedCall,
    pause: Callable[[], Awaitable[None]],
) -> None:
    """Hang the step's call up; StillGoingOn if, though Evo Voice accepted it, the call's session
    still shows it going on: read up to HANG_UP_READS times, `pause` between. Nothing more once
    it is over or forgotten (404), nor when it can't be read (accepted: no sign it failed)."""
    assert call.session_id is not None
    # First on its row, for its follower (tried once: see CallStore.note_hang_up).
    await calls.note_hang_up(call.id, call.hung_up_by or HUNG_UP_BY_CHAIN)
    await evo.hang_up(call.session_id)
    patched = evo.hang_up_method == "PATCH"
    for read in range(HANG_UP_READS):
        if read:
            await pause()
        try:
            session = await evo.get_session(call.session_id, priority=Priority.FIRST)
        except EvoVoiceError:  # NotFound among them
            return
        if classify(session, call.state, patched=patched) == CallState.ENDED:
            return
    raise StillGoingOn(UNENDED)


async def step_call_now(
    calls: CallStore, find_session: Callable[[TrackedCall], Awaitable[TrackedCall]],
    escalation: Escalation, call: TrackedCall | None,
) -> TrackedCall | None:
    """The step's call at its deadline, or as its escalation ends (stopped, acknowledged), its
    row read again: the one last read may predate the follower's finding its session. Still
    unfound and not given up on (the bot died mid-dial, and the follower's look is not over), it
    is looked for once here (`find_session`, bot/calls/polling.py), else it could not be hung up
    before the next person is dialled, or as nobody else is. A look that fails leaves it
    unfound: the card says it may still ring."""
    call_id = escalation.step_call_id if call is None else call.id
    call = call if call_id is None else (await calls.get(call_id) or call)
    if call is None:
        return None
    try:
        return await find_session(call)  # as it is, found already or given up on
    except EvoVoiceError as exc:
        logger.warning("escalation %s: step %d's call unfound, and looking for it failed (%s)",
                       escalation.id, escalation.step + 1, type(exc).__name__,
                       extra={"escalation_id": escalation.id, "call_id": call.id})
        return call


async def session_now(evo: EvoVoiceClient, call: TrackedCall) -> Session | None:
    """The call's session now: the follower may not have seen an answer or an ack outcome yet.
    None: nothing to read (no session yet, over, or no longer known to Evo Voice); raises
    EvoVoiceError when Evo Voice can't say now (a 429, a 5xx, a timeout)."""
    if call.session_id is None or call.is_final:
        return None
    try:
        return await evo.get_session(call.session_id)
    except NotFound:
        return None


async def deadline_reads(
    evo: EvoVoiceClient, call: TrackedCall | None, acknowledges: Callable[[str | None], bool],
    pause: Callable[[], Awaitable[None]],
) -> list[Session]:
    """The step's call read afresh at its deadline (`session_now`), the newest read last. One
    that shows it over without an acknowledging outcome is read once more after `pause`, as the
    follower reads an end (bot/calls/polling.py): the flow may write a "press 1" a moment after
    the session reads over, and the next person must not be rung for want of it. Raises
    EvoVoiceError when the first read fails; the second failing, the first stands."""
    fresh = None if call is None else await session_now(evo, call)
    if call is None or fresh is None:
        return []
    if acknowledges(fresh.outcome) or classify(fresh, call.state) != CallState.ENDED:
        return [fresh]
    await pause()
    try:
        again = await session_now(evo, call)
    except EvoVoiceError:
        again = None
    return [fresh] if again is None else [fresh, again]


def reads_neither(reads: list[Session], escalation: Escalation) -> bool:
    """Whether the newest read at the deadline shows the call neither ringing nor answered nor
    over: Passive (nothing public says what it means), another value, or no callState. Someone
    may be listening, so it is left on rather than hung up on a guess (as when it can't be read)."""
    if not reads or not says_neither(reads[-1]):
        return False
    logger.warning("escalation %s: step %d's call reads callState %r at its deadline; not hung up",
                   escalation.id, escalation.step + 1, (reads[-1].call_state or "")[:40],
                   extra={"escalation_id": escalation.id})
    return True


def answered_in(reads: list[Session], call: TrackedCall | None) -> bool:
    """Whether a read of the step's call shows it answered: connected, even as it ends."""
    previous = call.state if call is not None else None
    return any(shows_answer(r) or classify(r, previous) == CallState.CONNECTED for r in reads)


async def seen_now(evo: EvoVoiceClient, call: TrackedCall | None) -> TrackedCall | None:
    """The step's call as its escalation ends (stopped, acknowledged), answered if a fresh read
    shows it so though its row doesn't yet (picked up since the follower's last poll): such a
    call is left on, as at the deadline, not hung up as ringing. A read that fails leaves it as
    its row says."""
    if call is None or call.answered or call.known_over:
        return call
    try:
        fresh = await session_now(evo, call)
    except EvoVoiceError:
        return call
    return replace(call, answered=True) if fresh and answered_in([fresh], call) else call


async def still_ringing(evo: EvoVoiceClient, calls: CallStore, escalation: Escalation) -> bool:
    """Whether the step's call may still ring, for a page sent by a run that didn't dial it: the
    bot was down meanwhile, so the call's row is as it was left, and Evo Voice says more. Not
    once it was picked up: its person is on it."""
    call_id = escalation.step_call_id
    call = None if call_id is None else await until_database_answers(
        lambda: calls.get(call_id), f"escalation {escalation.id}: reading its call",
        extra={"escalation_id": escalation.id, "call_id": call_id})
    if call is None or call.is_final or call.answered:  # unknown: as on time; else over or on
        return call is None
    try:
        fresh = await session_now(evo, call)
    except EvoVoiceError:  # can't say: it may
        return True
    return fresh is None or not (classify(fresh, call.state) in FINAL_STATES
                                 or answered_in([fresh], call))
