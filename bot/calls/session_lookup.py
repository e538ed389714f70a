"""Which session found by a call's number is that call's: the follower's look for the session of a
call whose POST's answer was lost (bot/calls/polling.py), and an escalation step's one look of its
own when its call is still unfound at its deadline (`CallPoller.find_session`), pick alike.

Sessions to the number created since the attempt (less `AMBIGUOUS_LOOKUP_SLACK`), closest in time
to the attempt first, none another call has taken; the pick is claimed (`CallStore.claim_session`),
so that of two looks for one call, or of two calls to one number, each session goes to one call.
"""

from __future__ import annotations

import datetime as dt

from bot.calls.models import AMBIGUOUS_LOOKUP_SLACK
from bot.calls.store import CallStore, TrackedCall
from bot.evovoice.client import EvoVoiceClient, Priority, Session
from bot.evovoice.dates import gap
from bot.evovoice.finding import SessionsFound


async def sessions_to(
    evo: EvoVoiceClient, account_ids: list[str], call: TrackedCall, priority: Priority
) -> SessionsFound:
    """The sessions to the call's number since its attempt; raises EvoVoiceError."""
    assert call.e164 is not None
    since = dt.datetime.fromtimestamp(call.created_at, dt.UTC) - AMBIGUOUS_LOOKUP_SLACK
    return await evo.find_sessions(account_ids, to=call.e164, since=since, priority=priority)


async def claim_closest(
    evo: EvoVoiceClient, store: CallStore, call: TrackedCall, sessions: list[Session]
) -> Session | None:
    """The session of `sessions` claimed for `call`; None if none could be (all taken: by other
    calls, or by another look for this one, whose claim its row shows)."""
    # Closest in time to the attempt first: of two calls to one number a few seconds apart,
    # each gets its own session, and an older call to the number loses to a newer one. A time
    # without a zone is measured in the zone that brings it closest (bot/evovoice/dates.py):
    # a server keeps one zone, so this call's session is seconds from the attempt in it, an
    # earlier call's as far from it as it is older (unless by a whole quarter hour). The
    # attempt on Evo Voice's clock, as its sessions are dated (bot/evovoice/clock.py).
    fresh = closest_first(evo, sessions, dt.datetime.fromtimestamp(call.created_at, dt.UTC))
    taken = await store.sessions_taken([s.id for s in fresh])
    for session in fresh:
        if session.id not in taken and await store.claim_session(call.id, session.id):
            return session
    return None


def closest_first(
    evo: EvoVoiceClient, sessions: list[Session], attempt: dt.datetime
) -> list[Session]:
    """`sessions`, closest in time to `attempt` (this host's clock, moved onto Evo Voice's) first;
    one whose date can't be read as if `AMBIGUOUS_LOOKUP_SLACK` away; equals in their order. Also
    the pick of the one look right after a POST whose answer was lost (bot/calls/dialling.py)."""
    started = evo.clock.on_server(attempt)
    unknown = AMBIGUOUS_LOOKUP_SLACK.total_seconds()
    return sorted(sessions, key=lambda s: _gap_or(gap(s.date_created, started), unknown))


def _gap_or(seconds: float | None, unknown: float) -> float:
    return unknown if seconds is None else seconds
