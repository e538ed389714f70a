"""`EVOVOICE_MODE=simulate`: real Slack, simulated calls, for rehearsing before any phone rings.

The bot talks to the Evo Voice stand-in (bot/standins, the tests' own), started on the loopback
inside the bot's process and seeded from the policy file: every flow it names (the on-call flow,
the `[flows]` aliases) exists, and so does the default caller ID. Nothing leaves the machine on
the Evo Voice side. Each simulated call rings for `RING_SECONDS` and ends unanswered, so an
escalation walks the whole rotation, step by step, as it would if nobody picked up.

Every message the bot posts says the call is simulated (`BANNER`, added by the Notifier).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import re
import secrets
from typing import TYPE_CHECKING

from bot.config import Policy

if TYPE_CHECKING:
    from bot.standins.evovoice import EvoVoiceStandIn

BANNER = "🧪 Simulated call (EVOVOICE_MODE=simulate): no phone rings."
RING_SECONDS = 15.0
SIMULATED_ACCOUNT = ("simulated", "Simulated account")
SIMULATED_LINE = "+18145550100"
OUTCOME = "No answer (simulated)"
DEFAULT_FLOWS = ("Escalation", "Wake Up Call")


class SimulatedEvoVoice:
    """The stand-in, seeded from the policy, and the clock that ends its calls."""

    def __init__(self, policy: Policy, account_id: str | None = None, *,
                 ring_seconds: float = RING_SECONDS) -> None:
        # Imported here: every start reads BANNER from this module, few simulate.
        from bot.standins.evovoice import EvoVoiceStandIn

        self.username = "simulated@callbot.invalid"
        self.password = secrets.token_urlsafe(16)
        account = (account_id, SIMULATED_ACCOUNT[1]) if account_id else SIMULATED_ACCOUNT
        self.standin: EvoVoiceStandIn = EvoVoiceStandIn(
            username=self.username, password=self.password, accounts=[account]
        )
        # This run's own session ids: the database keeps those of the runs before (unique there).
        run = secrets.token_hex(4)
        self.standin.session_ids = (f"sim-{run}-{n}" for n in itertools.count(1))
        self.ring_seconds = ring_seconds
        self._seed(policy, account[0])
        self._ender: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.standin.url

    def _seed(self, policy: Policy, account_id: str) -> None:
        names = list(DEFAULT_FLOWS)
        if policy.oncall is not None and policy.oncall.flow not in names:
            names.append(policy.oncall.flow)
        flows = [{"id": f"sim-{_slug(name)}", "name": name, "accountId": account_id}
                 for name in names]
        for alias, flow_id in policy.flows.items():
            flows.append({"id": flow_id, "name": alias.replace("-", " ").title(),
                          "accountId": account_id})
        self.standin.flows[:] = flows
        line = policy.default_caller_id or SIMULATED_LINE
        self.standin.phone_numbers[:] = [{"id": "sim-line", "displayName": "Simulated line",
                                          "phoneNumber": line, "accountId": account_id}]

    async def start(self) -> None:
        await self.standin.start()
        self._ender = asyncio.create_task(self._end_unanswered(), name="simulated calls")

    async def stop(self) -> None:
        if self._ender is not None:
            self._ender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ender
            self._ender = None
        await self.standin.stop()

    async def _end_unanswered(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.ring_seconds / 4))
            self.end_calls_rung_out(dt.datetime.now(dt.UTC))

    def end_calls_rung_out(self, now: dt.datetime) -> None:
        for session in list(self.standin.sessions.values()):
            if session.get("ended"):
                continue
            created = dt.datetime.fromisoformat(str(session["dateCreated"]).replace("Z", "+00:00"))
            if (now - created).total_seconds() >= self.ring_seconds:
                self.standin.set_session_state(
                    session["id"], ended=True, callState="Disconnected", outcome=OUTCOME,
                    dateCompleted=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "flow"
