"""The phone rings first: a call's Slack messages wait until the calls on their way to Evo Voice
have sent their `POST /sessions/outgoing`, at most `DIALS_FIRST_MAX_WAIT` seconds.

Slack is already off the dialling path (a call never waits for Slack). This is the other half: in a
burst, the calls' own Slack messages (their parent posts, each a Web API round trip of event-loop
work) would otherwise share the one event loop with the calls still on their way to the phone, and
every later POST would wait for them. Each call is counted from the moment its work starts
(`on_its_way`, around CallService.handle and Dialler.place) until its POST has been sent (the Evo
Voice transport says so, `REQUEST_SENT` in bot/evovoice/transport.py) or it ends without one (a
refusal, a question, a failure). A lone call's parent post leaves right after its POST; the cap
keeps a call stuck before its POST (waiting out a 429, say) from holding Slack back for long.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from bot.tasks import InFlight

DIALS_FIRST_MAX_WAIT = 1.0  # seconds


class _OnItsWay:
    def __init__(self, calls: InFlight) -> None:
        self._calls = calls
        self.done = False

    def arrived(self) -> None:
        if not self.done:
            self.done = True
            self._calls.left()


# The call whose work runs in this task (and the tasks it starts), until its POST is sent.
_CURRENT: ContextVar[_OnItsWay | None] = ContextVar("call_on_its_way", default=None)


class DialsFirst(InFlight):
    """The calls on their way to Evo Voice (`count`); `idle()` waits for them."""

    def __init__(self, max_wait: float = DIALS_FIRST_MAX_WAIT) -> None:
        super().__init__(max_wait)

    @contextmanager
    def on_its_way(self) -> Iterator[None]:
        """Count the call worked on inside until its POST is sent, or the block ends. Nested
        (place() inside handle()), the outer count goes on: one call, counted once."""
        current = _CURRENT.get()
        if current is not None and not current.done:
            yield
            return
        token = _OnItsWay(self)
        self.entered()
        reset = _CURRENT.set(token)
        try:
            yield
        finally:
            _CURRENT.reset(reset)
            token.arrived()

    @staticmethod
    def dialled() -> None:
        """The POST of the call worked on in this task has been sent."""
        current = _CURRENT.get()
        if current is not None:
            current.arrived()

    @staticmethod
    def ended() -> None:
        """The call worked on in this task sends no POST (refused; what remains of its work, such
        as waiting for a failing database, holds no other call's Slack messages back)."""
        DialsFirst.dialled()
