"""The phones the demo's Evo Voice rings, and what the person holding one does with it (answer,
decline, voicemail, acknowledge, hang up): each is a change to the stand-in's session, as the real
Evo Voice would report it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from bot.config import Policy
from bot.demo import DemoError
from bot.demo.seed import FLOWS, PEOPLE
from bot.phone import mask
from bot.standins.evovoice import EvoVoiceStandIn

JSON = dict[str, Any]

# How a voicemail plays out: it picks up, records for a moment, hangs up.
VOICEMAIL_SECONDS = 3.0
# How long a phone nobody picks up rings before the call ends unanswered, as a real one stops
# (else its status would say "Ringing…" for as long as the demo runs).
RING_SECONDS = 60.0
NO_ANSWER = "No answer"
PHONE_ACTIONS = ("answer", "decline", "voicemail", "acknowledge", "hangup")


class Phones:
    def __init__(self, evo: EvoVoiceStandIn, *, ring_seconds: float = RING_SECONDS) -> None:
        self.evo = evo
        self.policy: Policy | None = None  # its people's numbers name who a phone belongs to
        self.voicemail_seconds = VOICEMAIL_SECONDS
        self.ring_seconds = ring_seconds
        self._ringer: asyncio.Task[None] | None = None
        # The voicemails still recording, by call: each leaves when its call ends, so a demo left
        # running for days holds none of those long over.
        self._voicemails: dict[str, asyncio.TimerHandle] = {}

    @property
    def voicemails_recording(self) -> int:
        return len(self._voicemails)

    def act(self, session_id: str, action: str) -> None:
        """What the person whose phone rings does."""
        if action not in PHONE_ACTIONS:
            raise DemoError(f"a phone can't {action!r}")
        session = self.evo.sessions.get(session_id)
        if session is None or session.get("ended"):
            raise DemoError("that call is over")
        person = self._person_of(str(session.get("toAddress", "")))
        connected = session.get("callState") == "Connected"
        if action == "answer":
            self.evo.set_session_state(session_id, callState="Connected", answeredByName=person)
        elif action == "acknowledge":
            # A flow that asks "press 1 to acknowledge" reports it in the session's outcome.
            self.evo.set_session_state(session_id, callState="Connected", answeredByName=person,
                                       outcome="Acknowledged")
        elif action == "voicemail":
            self.evo.set_session_state(session_id, callState="Connected",
                                       answeredByName=f"Voicemail of {person}")
            self._stop_voicemail(session_id)  # a second voicemail on a call starts it afresh
            self._voicemails[session_id] = asyncio.get_running_loop().call_later(
                self.voicemail_seconds, self._end, session_id, "Voicemail")
        elif action == "decline":
            self._end(session_id, "Completed" if connected else "Declined")
        else:
            self._end(session_id, "Completed" if connected else "Declined")

    def start(self) -> None:
        self._ringer = asyncio.get_running_loop().create_task(self._ring_out(), name="demo phones")

    def stop(self) -> None:
        if self._ringer is not None:
            self._ringer.cancel()
            self._ringer = None
        for session_id in list(self._voicemails):
            self._stop_voicemail(session_id)

    async def _ring_out(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.ring_seconds / 4))
            now = dt.datetime.now(dt.UTC)
            for session in list(self.evo.sessions.values()):
                if session.get("ended") or session.get("callState") == "Connected":
                    continue
                created = dt.datetime.fromisoformat(
                    str(session["dateCreated"]).replace("Z", "+00:00"))
                if (now - created).total_seconds() >= self.ring_seconds:
                    self._end(str(session["id"]), NO_ANSWER)

    def shown(self) -> list[JSON]:
        """Every phone rung so far, newest first, as the page shows it."""
        phones = []
        flow_names = {flow["id"]: flow["name"] for flow in FLOWS}
        for session in self.evo.sessions.values():
            number = str(session.get("toAddress") or "")
            ended, state = bool(session.get("ended")), str(session.get("callState") or "")
            phones.append({
                "session_id": session["id"],
                "person": self._person_of(number),
                "number": mask(number) if number else "",
                "flow": flow_names.get(str(session.get("flowId")), ""),
                "state": "ended" if ended else ("connected" if state == "Connected" else "ringing"),
                "outcome": session.get("outcome") or "",
            })
        return phones[::-1]

    def _stop_voicemail(self, session_id: str) -> None:
        timer = self._voicemails.pop(session_id, None)
        if timer is not None:
            timer.cancel()  # nothing, when it is this timer that fired

    def _end(self, session_id: str, outcome: str) -> None:
        self._stop_voicemail(session_id)
        session = self.evo.sessions.get(session_id)
        if session is None or session.get("ended"):
            return
        fields: JSON = {"ended": True, "callState": "Disconnected",
                        "dateCompleted": _now_iso()}
        if not session.get("outcome"):
            fields["outcome"] = outcome
        self.evo.set_session_state(session_id, **fields)

    def _person_of(self, number: str) -> str:
        assert self.policy is not None
        for user_id, e164 in self.policy.people.items():
            if e164 == number:
                return PEOPLE.get(user_id, (user_id, user_id, ""))[1]
        for _, real_name, phone in PEOPLE.values():
            if phone and "".join(ch for ch in phone if ch.isdigit() or ch == "+") == number:
                return real_name
        return mask(number) if number else "unknown"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
