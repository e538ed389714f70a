"""Dialling again after a refusal that said "not now": which refusals, and how long to wait.

Only refusals that certainly placed no call are tried again: a 429 (Evo Voice asked to wait) and a
connection that could not be opened (nothing was sent). A 401/403/400 would only be refused again,
and an ambiguous failure may have placed the call. The caller says how long it may keep trying (an
escalation step: until its deadline); a wait that would pass it is not started.

The back-off is also the least a 429 is waited for: a ``Retry-After`` of 0, or a date already past
(a server whose clock is behind ours), would otherwise send the POST again at once, dozens of times
a second until the step's deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.evovoice.client import EvoVoiceError, EvoVoiceUnreachable, RateLimited

# Waits between tries when Evo Voice gives no Retry-After: 1 s, 2 s, 4 s… up to this.
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 15.0

TimeLeft = Callable[[], float]


def retry_delay(exc: EvoVoiceError, attempt: int) -> float | None:
    """Seconds to wait before try `attempt + 1`, or None when trying again is no use."""
    if isinstance(exc, RateLimited):
        return max(exc.retry_after or 0.0, backoff(attempt))
    if isinstance(exc, EvoVoiceUnreachable):
        return backoff(attempt)
    return None


def backoff(attempt: int) -> float:
    return float(min(FIRST_RETRY_SECONDS * 2 ** max(attempt - 1, 0), MAX_RETRY_SECONDS))


async def wait_to_retry(
    exc: EvoVoiceError,
    attempt: int,
    time_left: TimeLeft | None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Wait, and say yes, when `exc` is worth another try and there is time for one."""
    if time_left is None:
        return False
    delay = retry_delay(exc, attempt)
    if delay is None or delay >= time_left():
        return False
    await sleep(delay)
    return time_left() > 0
