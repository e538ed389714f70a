"""The phone rings first: a call's Slack messages wait until the calls on their way to Evo Voice
have sent their `POST /sessions/outgoing`, at most `DIALS_FIRST_MAX_WAIT` seconds.

Slack is already off the dialling path: no message of a call is waited for before its POST (only
its checks may ask Slack, when a role comes through a user group not in the cache). This is the
other half: in a burst, the calls' own Slack messages (their parent posts, each a Web API round
trip of event-loop work) would otherwise share the one event loop with the calls still on their way
to the phone, and every later POST would wait for them. A call a person asks for (/call, /call
test, the call form, Call again, the Call of an "are you sure?") is counted from its ack (`acked`),
an escalation's calls from the moment their work starts (`on_its_way`, around CallService.handle
and Dialler.place: an escalation's task lives for minutes, and would hold the count meanwhile),
until the POST has been sent (the Evo Voice transport says so, `REQUEST_SENT` in
bot/evovoice/transport.py) or the call ends without one: refused, turned into a question, a
duplicate, failed. Those go at once, before the requester is told (that is Slack's work too). A
lone call's parent post leaves right after its POST; the cap keeps a call stuck before its POST
(waiting out a 429, say) from holding Slack back for long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from bot.tasks import InFlight

DIALS_FIRST_MAX_WAIT = 1.0  # seconds


class _OnItsWay:
    def __init__(self, calls: InFlight, *, before_its_work: bool = False) -> None:
        self._calls = calls
        self.done = False
        # Counted from its ack, its work not begun: the first block of that work takes it over.
        self.before_its_work = before_its_work

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
        (place() inside handle()), the outer count goes on: one call, counted once; so does
        the count of a call `acked`, which the block then ends."""
        current = _CURRENT.get()
        reset = None
        if current is not None and not current.done:
            if not current.before_its_work:
                yield
                return
            current.before_its_work = False
            token = current
        else:
            token = _OnItsWay(self)
            self.entered()
            reset = _CURRENT.set(token)
        try:
            yield
        finally:
            if reset is not None:
                _CURRENT.reset(reset)
            token.arrived()

    def acked(self, start: Callable[[], asyncio.Task[Any]]) -> asyncio.Task[Any]:
        """`start` the work of a call acked just now, counted from now rather than once its work
        starts: that waits for the acks still being sent (bot/tasks.py), and meanwhile, in a wave,
        the parent posts of the calls acked before it would go, and every later POST wait for
        them. Its work's `on_its_way` goes on with this count."""
        token = _OnItsWay(self, before_its_work=True)
        self.entered()
        reset = _CURRENT.set(token)  # the task's context is a copy of this one: it finds the count
        try:
            task = start()
        except BaseException:
            token.arrived()
            raise
        finally:
            _CURRENT.reset(reset)
        # However it ends, even cancelled before it began (a shutdown), it is on its way no more.
        task.add_done_callback(lambda _: token.arrived())
        return task

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
