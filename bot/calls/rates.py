"""The policy file's rates and durations (`per_user = "5/10m"`, `repeat_window = "60s"`,
`[oncall] escalations_per_person = "3/1h"`) read into values, and waits told in words ("you may
call again in 4 min 10 s"). Pure: the windows themselves are counted in bot/calls/limits.py (calls)
and bot/oncall/escalation_limit.py (escalations)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DAY_SECONDS = 24 * 3600
REPEAT_WINDOW_SECONDS = 60.0
# The longest window a rate may use; longer ones would keep numbers' hashes for weeks.
MAX_WINDOW_SECONDS = 7 * DAY_SECONDS

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY_SECONDS}
_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*", re.ASCII)
# The most calls a rate may allow in its window, as `per_day`'s most.
MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class Rate:
    """`count` calls per `seconds`; `text` is how the policy file wrote it."""

    count: int
    seconds: float
    text: str

    @property
    def window_words(self) -> str:
        """"10m" → "10 minutes", "1h" → "hour" (as in "in the last hour")."""
        match = _RATE.fullmatch(self.text)
        if match is None:
            return f"{self.seconds:g} seconds"
        amount = int(match.group(2) or 1)
        word = _UNIT_WORDS[match.group(3)]
        return word if amount == 1 else f"{amount} {word}s"


def _whole(digits: str) -> int:
    """The number `digits` write, or 10**12 for any larger: past every bound here, and Python
    won't read an int of thousands of digits."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 12 else 10**12


def parse_rate(text: str) -> Rate:
    """"5/10m" → Rate(5, 600). Units s, m, h, d; "5/h" means per hour. Raises ValueError."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a rate; write calls/window like \"5/10m\", \"20/1h\" or \"3/30s\""
        )
    count, amount, unit = _whole(match.group(1)), _whole(match.group(2) or "1"), match.group(3)
    seconds = amount * _UNITS[unit]
    if count > MAX_COUNT:
        raise ValueError(f"{text!r} allows too many calls; the count may be at most {MAX_COUNT}")
    if count < 1:
        raise ValueError(f"{text!r} allows no calls at all; the count must be at least 1")
    if seconds < 1:
        raise ValueError(f"{text!r} has an empty window; use at least 1s")
    if seconds > MAX_WINDOW_SECONDS:
        raise ValueError(f"{text!r}: the window may be at most 7 days")
    return Rate(count=count, seconds=float(seconds), text=f"{count}/{amount}{unit}")


_DURATION = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> float:
    """"60s" → 60.0, "2m" → 120.0, "0s" → 0.0 (off). Units s, m, h, d. Raises ValueError."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; write it like \"60s\", \"2m\" or \"0s\" (off)"
        )
    seconds = _whole(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_WINDOW_SECONDS:
        raise ValueError(f"{text!r}: at most 7 days")
    return float(seconds)


def describe_wait(seconds: float) -> str:
    """3725 → "1 h 3 min"; always rounded up (to whole seconds, to whole minutes once an hour or
    more), at least "1 s": the call must fit at the time told, never a moment after it."""
    total = max(1, math.ceil(seconds))
    if total > 3600:
        total = math.ceil(total / 60) * 60
    return _duration_words(total)


def describe_ago(seconds: float) -> str:
    """330 → "5 min 30 s", 3725 → "1 h 2 min": how long ago, rounded down, at least "1 s"."""
    return _duration_words(max(1, math.floor(seconds)))


def _duration_words(total: int) -> str:
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    if secs and not hours:
        parts.append(f"{secs} s")
    return " ".join(parts) or f"{secs} s"
