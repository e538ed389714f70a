"""Requests taken and never dialled: the replica handling one died after claiming it and before
writing its call's row.

A request's claim (a `/call`, a call form's Submit, "Call" under a question, Call again) keeps a
note of whom to tell and where (`untold`, bot/storage/claims.py), written with the claim. The call's
row, written just before the POST, clears it in the same transaction (bot/storage/together.py); a
request that ends without one (refused, a question asked, a bug reported) clears it once its
requester was told (`settled`). A replica that dies in between (SIGKILL, a lost host, stopped past
its grace) leaves the note: nothing was dialled, the claim keeps a second delivery or click from
acting, and the last word the requester had may be "📞 Confirmed: checking again, then calling."

So a lease keeper's round (the first right after start-up: `take_over`) adopts the notes of the
replicas gone for a lease and tells each requester, once, that the call was NOT placed and to ask
again: where they were last told (the click's or command's response_url while it lives, replacing
the question's "Confirmed"), else by direct message. Nothing is dialled on its own: a note holds no
number in full, and a replica that only stalled and comes back finds its note gone as it writes the
call's row (AlreadyTold), and dials nothing. Call again's claim is given back once told, so that
the button works again; the other claims stay, so that a late copy of the request does nothing.

The note keeps the request's response_url (Slack's, 30 minutes) until the row is written, moments
later: only a replica gone leaves it for longer, until its requester is told.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from bot.audit.trail import AuditLog
from bot.calls import messages as views
from bot.calls.models import CALL_AGAIN_ORIGIN, CallRequest, CallResult, CheckedCall, Outcome
from bot.slack.blocks import clip
from bot.slack.notify import RESPONSE_URL_LIFETIME_SECONDS, Notifier
from bot.storage.claims import Claims, Untold
from bot.storage.faults import DATABASE_FAULTS, until_database_answers, wrote_nothing
from bot.storage.leases import Leases

logger = logging.getLogger(__name__)

# Outcomes whose call's row was written (and the note cleared with it).
_ROW_WRITTEN = frozenset({Outcome.PLACED, Outcome.FAILED, Outcome.UNTOLD, Outcome.CALLED_OFF})
MAX_NUMBER_SHOWN = 40  # a /call's number as typed (not checked yet), masked


class Kind(StrEnum):
    CALL = "call"  # /call or the call form: told through its response_url, else a DM
    QUESTION = "question"  # "Call" under a question: the question's "Confirmed" replaced
    AGAIN = "again"  # Call again: its claim given back once told


class UntoldRequests:
    def __init__(self, claims: Claims, notifier: Notifier, leases: Leases, audit: AuditLog, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._claims = claims
        self._notifier = notifier
        self._leases = leases
        self._audit = audit
        self._clock = clock

    def note(self, key: str, *, user_id: str, response_url: str | None, number: str | None,
             kind: Kind = Kind.CALL, team_id: str | None = None, channel_id: str | None = None,
             origin: str | None = None, question: int | None = None) -> Untold:
        """What `key`'s claim keeps for its requester: `number` masked (None: not known); the
        team, channel, origin and question confirmed (a question's Call), for the audit trail's
        record of a request never dialled."""
        return Untold(key, json.dumps({
            "owner": self._leases.owner, "at": self._clock(), "kind": str(kind), "user": user_id,
            "url": response_url, "number": number, "team": team_id, "channel": channel_id,
            "origin": origin, "question": question}))

    def note_request(self, key: str, request: CallRequest, number: str | None = None) -> Untold:
        """`note` for `request` (a /call's number as typed, masked, unless `number` is given)."""
        if number is None:
            # As the audit trail masks it: the record of a request never dialled is made from this.
            number = clip(self._audit.masked_as_typed(request.number_text), MAX_NUMBER_SHOWN,
                          markup=False)
        kind = Kind.AGAIN if request.origin == CALL_AGAIN_ORIGIN else Kind.CALL
        return self.note(key, user_id=request.user_id, response_url=request.response_url,
                         number=number or None, kind=kind, team_id=request.team_id,
                         channel_id=request.channel_id, origin=request.origin)

    @staticmethod
    async def claim_noted(claim: Callable[..., Awaitable[bool]], untold: Untold,
                          noted: list[Untold]) -> bool:
        """`claim(untold=…)`, the claim of `untold`'s request with its note: `noted` hears the note
        once it may be kept (granted, or the database failed on it after writing, perhaps)."""
        try:
            granted = await claim(untold=untold.note)
        except DATABASE_FAULTS as exc:
            if not wrote_nothing(exc):
                noted.append(untold)
            raise
        if granted:
            noted.append(untold)
        return granted

    async def settled(self, untold: Untold | None, result: CallResult) -> CallResult:
        """`result` of the request whose claim kept `untold`: one that ended without a call's row
        has told its requester (a refusal, a question, a bug's reference), and its note goes,
        once the database answers (left, a restart would tell them again)."""
        if untold is not None and result.outcome not in _ROW_WRITTEN:
            await until_database_answers(lambda: self._claims.told(untold),
                                         f"forgetting the note of {untold.key}")
        return result

    async def take_over(self) -> None:
        """A lease keeper's round: tell the requesters of the requests that replicas gone for a
        lease took and never dialled. A note is adopted first (one replica tells it), and goes
        once told (one nobody heard, Slack failing, is handed back for a later round, until its
        claim expires); should this replica die (or fail to forget it) meanwhile, it is told again
        once this one is gone too: at least once, as the outbox's posts."""
        kept = await self._claims.untold()
        if not kept:
            return
        now = self._clock()
        alive = {replica.id for replica in await self._leases.alive()} | {self._leases.owner}
        for key, text, claimed_at in kept:
            note = _read(text)
            if note.get("owner") in alive or claimed_at >= now - self._leases.lease_seconds:
                continue  # its replica may yet write the call's row (one that just started too)
            adopted = Untold(key, json.dumps(note | {"owner": self._leases.owner}))
            if not await self._claims.renote(key, text, adopted.note):
                continue  # its row was written meanwhile, or another replica adopted it
            if isinstance(note.get("user"), str):
                logger.warning("a call requested by %s was never dialled (its replica stopped "
                               "first): telling them", note["user"],
                               extra={"user_id": note["user"]})
                if not await self._tell(note):
                    # Nobody heard it (Slack failing): handed back as it was found, for a later
                    # round to tell (adopted, it would wait for this replica to be gone).
                    await self._claims.renote(key, adopted.note, text)
                    continue
                # Once, however many rounds tell it (one that dies before forgetting the note);
                # keyed by the claim's time too: Call again's claim, given back once told, is
                # claimed again under the same key by its next click.
                await self._audit.not_dialled(
                    f"untold:{key}:{note.get('at')}", team_id=_text(note, "team"),
                    user_id=note["user"],
                    channel_id=_text(note, "channel"), origin=_text(note, "origin") or "command",
                    number_masked=_text(note, "number"),
                    confirmed_question=question if isinstance(question := note.get("question"),
                                                              int) else None,
                )
            await self._claims.told(adopted, release=note.get("kind") == Kind.AGAIN)

    async def _tell(self, note: dict[str, Any]) -> bool:
        """True once the requester was told, some way."""
        kind, url = note.get("kind"), note.get("url")
        number = note.get("number") if isinstance(note.get("number"), str) else None
        message = views.not_placed(number, again=kind == Kind.AGAIN)
        at = note.get("at")
        if not isinstance(url, str) or not isinstance(at, (int, float)) or (
                self._clock() - at >= RESPONSE_URL_LIFETIME_SECONDS):
            url = None
        if url is not None and kind == Kind.QUESTION:
            if await self._notifier.replace(url, message):
                return True
            url = None
        return await self._notifier.tell(user_id=note["user"], channel_id=None, response_url=url,
                                         message=message)


def untold_note(checked: CheckedCall) -> str | None:
    """The note a checked request's claim keeps (the call form's kit writes it with its claim)."""
    return checked.request.untold.note if checked.request.untold is not None else None


def _text(note: dict[str, Any], name: str) -> str:
    """A note's text field; "" if it has none (a note from before it was kept)."""
    value = note.get(name)
    return value if isinstance(value, str) else ""


def _read(text: str) -> dict[str, Any]:
    try:
        note = json.loads(text)
    except ValueError:
        return {}
    return note if isinstance(note, dict) else {}
