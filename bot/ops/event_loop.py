"""The event loop the bot runs on: uvloop by default (`EVENT_LOOP=uvloop`), Python's own with
`EVENT_LOOP=asyncio`.

uvloop is asyncio's loop rewritten over libuv, in C: the same API, so the bot's code does not
change, with sockets, transports and timers that cost less of the one core a process has. When
a thousand /call come at once, the work before each POST is mostly that (accepting the request,
answering it, connecting to Evo Voice and writing the POST): the benchmark measured 0.9 ms of the
bot's CPU per call to its last POST instead of 1.0, and the last POST 6-10 % sooner (README,
"Benchmark"). `asyncio` is the way back should uvloop ever misbehave; uvloop has no Windows build,
so there the bot says so and runs on asyncio's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

logger = logging.getLogger(__name__)

EventLoopName = Literal["uvloop", "asyncio"]
T = TypeVar("T")


def loop_factory(name: EventLoopName) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """How to make the loop `name` asks for; None: asyncio's own."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        logger.warning("EVENT_LOOP=uvloop, but uvloop is not installed (it has no Windows build): "
                       "running on asyncio's own loop. Set EVENT_LOOP=asyncio to say so.")
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], name: EventLoopName) -> T:
    """`asyncio.run(main)` on the loop `name` asks for."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """The running loop's kind, as logs and EVENT_LOOP name it: "uvloop" or "asyncio"."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
