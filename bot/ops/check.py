"""`callbot check`: reads the configuration and tries it against Slack, Evo Voice and the database.

One line per check: ✓ when it holds, ✗ with a fix when it doesn't, – when it was not checked (not
used in this mode, or waiting on an earlier ✗). The exit code is 0 only when nothing failed.

The doctor changes nothing: it calls `auth.test` and `apps.connections.open` (no websocket is
opened), reads from Evo Voice with GETs, and opens the database read-only, without migrating.

Checks run in order over one `Checkup` (checkup.py), which carries what earlier checks established
(settings, clients, the account). They live by what they check: check_setup.py (settings, policy
file), check_slack.py, check_evovoice.py, check_evovoice_requests.py (the requests the bot will
send, tried harmlessly), check_database.py. To add one, write
`async def check_x(c: Checkup) -> list[Finding]` there and put it in `CHECKS`; README's
troubleshooting section is keyed by each check's subject.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from bot.ops.check_database import check_database
from bot.ops.check_evovoice import (
    check_default_caller_id,
    check_evovoice_account,
    check_evovoice_login,
    check_evovoice_role,
    check_flow_aliases,
    check_oncall,
)
from bot.ops.check_evovoice_requests import check_evovoice_requests
from bot.ops.check_setup import check_policy, check_settings
from bot.ops.check_slack import (
    check_slack_ids,
    check_slack_scopes,
    check_slack_token,
    check_socket_mode_token,
)
from bot.ops.checkup import WAITING, Check, Checkup
from bot.ops.findings import Finding, Status, failed

EXIT_OK = 0
EXIT_PROBLEMS = 1

CHECKS: list[Check] = [
    check_settings,
    check_policy,
    check_slack_token,
    check_slack_scopes,
    check_slack_ids,
    check_socket_mode_token,
    check_evovoice_login,
    check_evovoice_role,
    check_evovoice_account,
    check_evovoice_requests,
    check_flow_aliases,
    check_default_caller_id,
    check_oncall,
    check_database,
]


async def run_checkup(checks: Sequence[Check] = CHECKS, **overrides: Any) -> list[Finding]:
    """Every check's findings, in order. `overrides` go to Settings (tests: `_env_file=None`)."""
    checkup = Checkup(overrides=overrides)
    findings: list[Finding] = []
    try:
        for check in checks:
            try:
                findings += await check(checkup)
            except Exception as exc:  # a broken check must not hide the others
                findings += failed(check.__name__.removeprefix("check_"),
                                   f"the check itself failed ({type(exc).__name__})",
                                   "report this to the callbot maintainers")
    finally:
        await checkup.close()
    return findings


def report(findings: Sequence[Finding]) -> tuple[str, int]:
    """The text to print and the exit code."""
    problems = sum(1 for finding in findings if finding.status is Status.FAIL)
    lines = [finding.render() for finding in (_fold_waiting(findings) if problems else findings)]
    if problems:
        lines.append(f"\n{problems} problem{'s' if problems != 1 else ''} found: fix the lines "
                     "marked ✗ (README.md, \"Troubleshooting\", explains each) and run "
                     "`callbot check` again.")
        return "\n".join(lines), EXIT_PROBLEMS
    lines.append("\nAll checks passed.")
    return "\n".join(lines), EXIT_OK


def _fold_waiting(findings: Sequence[Finding]) -> list[Finding]:
    """The checks waiting on an earlier ✗ as one line, so the ✗ lines stand out."""
    waiting = [f for f in findings if f.status is Status.SKIP and f.detail.startswith(WAITING)]
    if len(waiting) < 2:
        return list(findings)
    folded = Finding(Status.SKIP, "Not checked yet",
                     "waiting on the lines marked ✗: " + ", ".join(f.subject for f in waiting))
    rest = [f for f in findings if not any(f is w for w in waiting)]
    return rest + [folded]


async def main(**overrides: Any) -> int:
    text, code = report(await run_checkup(**overrides))
    print(text, file=sys.stdout)
    return code
