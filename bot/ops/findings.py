"""What a check finds: a ✓, ✗ or – line with a stable subject and, for a ✗, the fix.

A leaf module: `callbot check` prints every finding; start-up (services.py) stops at the first ✗
of the same checks (policy_checks.py), so both say the same thing in the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.certificates import FIX as CERTIFICATE_FIX
from bot.certificates import untrusted

LIST_AT_MOST = 10


def at_most(items: Sequence[str], *, sep: str = ", ", more: str = "more") -> str:
    """`items` joined, LIST_AT_MOST of them at most, then how many `more` there are."""
    left = len(items) - LIST_AT_MOST
    return sep.join(items[:LIST_AT_MOST]) + (f" and {left} {more}" if left > 0 else "")


class Status(StrEnum):
    PASS = "✓"
    FAIL = "✗"
    SKIP = "–"


@dataclass(frozen=True)
class Finding:
    status: Status
    subject: str  # stable: README's troubleshooting is keyed by it
    detail: str
    fix: str | None = None

    def render(self) -> str:
        line = f"{self.status.value} {self.subject}: {self.detail}"
        return line + (f"\n    fix: {self.fix}" if self.fix else "")

    def as_problem(self) -> str:
        """One line, for start-up's "callbot cannot start" list."""
        return f"{self.subject}: {self.detail}" + (f" (fix: {self.fix})" if self.fix else "")


def passed(subject: str, detail: str) -> list[Finding]:
    return [Finding(Status.PASS, subject, detail)]


def failed(subject: str, detail: str, fix: str) -> list[Finding]:
    return [Finding(Status.FAIL, subject, detail, fix)]


def unreachable(subject: str, url: str, exc: BaseException, detail: str, fix: str
                ) -> list[Finding]:
    """✗ `detail` (`url` could not be reached: `exc`), `fix`; or, when `url`'s certificate was
    refused, that and what to do about it (bot/certificates.py)."""
    refused = untrusted(url, exc)
    if refused is not None:
        return failed(subject, refused, CERTIFICATE_FIX)
    return failed(subject, detail, fix)


def skipped(subject: str, why: str) -> list[Finding]:
    return [Finding(Status.SKIP, subject, why)]


def first_failure(findings: list[Finding]) -> Finding | None:
    return next((f for f in findings if f.status is Status.FAIL), None)
