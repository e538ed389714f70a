"""The buttons on a call's status message: Hang up and Call again.

A click is a new request and is checked as one: it must come from the call's own status message,
and the clicker must be the requester or hold Manager or SystemAdministrator. Call again then goes
through `CallService` like any call (role, number, flow, caller ID) with the call's own number,
flow and caller ID, which only the database holds: the button carries the call's id, nothing more.

Call again dials once per status message. Its idempotency key is the call's (`again:<call id>`), not
the click's: a double click and a redelivered click are one request. To call a third time, use the
newer call's button. The key is claimed only once the checks pass, so a click refused for a passing
reason (a user group lookup failing) may simply be tried again; a database failing before the POST
gives the claim back once it answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.access import AccessControl
from bot.audit.trail import AuditLog, EventKind, reason_of
from bot.calls import messages as views
from bot.calls.confirmations import Reason
from bot.calls.follow import CallFollower
from bot.calls.models import CALL_AGAIN_ORIGIN, TEST_ORIGIN, CallRequest, Outcome
from bot.calls.service import CallService
from bot.calls.status_views import can_call_again, can_hang_up
from bot.calls.store import CallStore, TrackedCall
from bot.config import KNOWN_ROLES
from bot.errors import CallbotError, FlowNotFound, describe, describe_hang_up
from bot.evovoice.catalog import Catalog
from bot.evovoice.client import (
    AlreadyEnded, EvoVoiceClient, EvoVoiceError, EvoVoiceTimeout, NotFound, ServerError)
from bot.slack.blocks import Markup
from bot.slack.notify import Notifier
from bot.storage.faults import refused_when_database_fails, until_database_answers

logger = logging.getLogger(__name__)

_CALL_ID = re.compile(r"^[0-9]{1,18}$")


class ButtonExpired(CallbotError):
    user_message = "This button no longer works. Use /call to place a new call."


class ButtonNotReady(CallbotError):
    user_message = ("This call's message was posted a moment ago and is still being set up: "
                    "click the button again in a few seconds.")


class EscalationButtonExpired(ButtonExpired):
    user_message = (
        "This button no longer works: its escalation is over, or it belongs elsewhere. To page "
        "on-call again, use Escalate to on-call on a message."
    )


class NotAllowedOnCall(CallbotError):
    user_message = (
        "You are not allowed to use this call's buttons: only the person who placed the call, or "
        "someone with the Manager or SystemAdministrator role, may."
    )


class CallNotLive(CallbotError):
    user_message = "This call is no longer going on, so there is nothing to hang up."


class CallStillLive(CallbotError):
    user_message = (
        "This call is still going on. Hang up first, or wait for it to end, before calling again."
    )


class AlreadyCalledAgain(CallbotError):
    user_message = (
        "This call was already called again from this message (one click dials once). To call "
        "once more, use the buttons on the newer call."
    )


# How far back Call again looks for a test call among the calls it repeats.
MAX_REPEATS_FOLLOWED = 20


class SomeoneElsesTest(CallbotError):
    """`/call test` rings only the person who asked (bot/listeners/test_call.py)."""

    def __init__(self, tester_id: str) -> None:
        super().__init__(Markup(
            f"This was <@{tester_id}>'s test call, and a test call rings only <@{tester_id}>: "
            "nothing was dialled. To hear one yourself, use /call test."
        ))


class NoLongerTheirNumber(CallbotError):
    user_message = (
        "A test call rings the number you have now, and this one rang another: your Slack profile "
        "or [people] now gives a new number, or none the bot can read. Nothing was dialled. Use "
        "/call test to ring the number you have now."
    )


# The number a person's own test call rings now (their [people] entry, else their Slack profile:
# bot/oncall/roster.py), None without a usable one.
OwnNumber = Callable[[str], Awaitable[str | None]]


class CallTooOld(CallbotError):
    user_message = (
        "This call is too old to repeat: its number is no longer kept. Use /call with the number."
    )


class FlowGone(CallbotError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"The flow this call used, “{name}”, is no longer in the Evo Voice account, so it "
            "can't be called again: nothing was dialled. Use /call with one of its flows."
        )


class HangUpFailed(CallbotError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            f"Evo Voice did not hang up: {detail} The call may still be going on; try again, or "
            "end it in Evo Voice."
        )


@dataclass(frozen=True)
class ButtonClick:
    team_id: str
    user_id: str
    channel_id: str | None
    message_ts: str | None
    value: str
    response_url: str | None
    action_id: str = ""
    # Slack's time of the click: its own for every click, the same in every delivery of one.
    action_ts: str = ""

    def row_id(self) -> int:
        """The database id a button carries as its value; ButtonExpired if it isn't one."""
        if not _CALL_ID.fullmatch(self.value):
            raise ButtonExpired()
        return int(self.value)

    def came_from(self, team_id: str, channel_id: str, message_ts: str | None) -> bool:
        """Whether the click came from that message: a button value copied elsewhere, or forged,
        names a row whose message is somewhere else."""
        return (
            self.team_id == team_id
            and self.channel_id == channel_id
            and message_ts is not None
            and self.message_ts == message_ts
        )


class CallControls:
    def __init__(
        self,
        *,
        store: CallStore,
        follower: CallFollower,
        calls: CallService,
        access: AccessControl,
        evo: EvoVoiceClient,
        catalog: Catalog,
        audit: AuditLog | None,
        notifier: Notifier,
        own_number: OwnNumber,
    ) -> None:
        self._own_number = own_number
        self._store = store
        self._follower = follower
        self._calls = calls
        self._access = access
        self._evo = evo
        self._catalog = catalog
        self._audit = audit
        self._notifier = notifier

    async def hang_up(self, click: ButtonClick) -> None:
        try:
            with refused_when_database_fails("nothing was hung up"):
                call = await self._authorised(click)
            if not can_hang_up(call):
                raise CallNotLive()
            assert call.session_id is not None
            await self._store.note_hang_up(call.id, click.user_id)
            try:
                await self._evo.hang_up(call.session_id)
            except (NotFound, AlreadyEnded):
                # Evo Voice has forgotten it, or says it has ended: it ended on its own. The
                # follower will show that.
                await self._not_hanging_up(call, click.user_id)
                self._follower.poke(call.id)
                raise CallNotLive() from None
            except EvoVoiceError as exc:
                if not isinstance(exc, (EvoVoiceTimeout, ServerError)):  # sent, maybe applied
                    await self._not_hanging_up(call, click.user_id)
                await self._tell(click, HangUpFailed(describe_hang_up(exc)))
                await self._record(call, EventKind.HANG_UP_FAILED, click, reason_of(exc))
                return
        except CallbotError as exc:
            await self._tell(click, exc)
            return
        logger.info("call %s hung up by %s", call.id, click.user_id, extra={
            "call_id": call.id, "session_id": call.session_id, "user_id": click.user_id})
        # Hung up: what is left to write waits for a failing database (never told "not done").
        # Should the follower have seen the end before the row said who hung up, it shows now.
        await self._noted(call, EventKind.HANG_UP, click, "noting who hung up",
                          hung_up_by=click.user_id)
        self._follower.poke(call.id)

    async def _not_hanging_up(self, call: TrackedCall, user_id: str) -> None:
        """The hang-up did nothing (refused, or the call ended on its own): the row names who
        hung up as it did before, unless someone else's hang-up has been noted since."""
        await until_database_answers(
            lambda: self._store.unnote_hang_up(call.id, user_id, call.hung_up_by),
            f"call {call.id}: its hang-up did nothing", extra={"call_id": call.id})

    async def call_again(self, click: ButtonClick) -> None:
        try:
            with refused_when_database_fails("nothing was dialled"):
                call = await self._authorised(click)
                test_call = await self._a_test_call(call)
                if click.user_id != call.requester_id and test_call:
                    raise SomeoneElsesTest(call.requester_id)
            if call.called_again_by is not None:
                raise AlreadyCalledAgain()
            if not call.is_final or call.following:
                raise CallStillLive()
            if not can_call_again(call) or call.e164 is None:
                raise CallTooOld()
            await self._flow_still_there(call)
            if test_call:
                await self._still_their_number(call)
        except AlreadyCalledAgain as exc:
            # Nothing is dialled: the other calls' posts need not wait while Slack is told.
            self._calls.dials_first.ended()
            await self._tell(click, exc)
            # A second click, as one racing the first is (handle()'s duplicate): recorded in the
            # audit trail, logged and counted as one.
            await self._calls.repeated(self._again(call, click))
            return
        except CallbotError as exc:
            self._calls.dials_first.ended()  # as above
            await self._tell(click, exc)
            self._calls.count_ending(Outcome.REFUSED, exc)
            return
        request = self._again(call, click)
        result = await self._calls.handle(request)
        if result.outcome == Outcome.DUPLICATE:
            await self._tell(click, AlreadyCalledAgain())
            return
        if result.outcome in (Outcome.PLACED, Outcome.UNKNOWN, Outcome.FAILED):
            await self._noted(call, EventKind.CALLED_AGAIN, click, "noting who called again",
                              called_again_by=click.user_id)

    async def _a_test_call(self, call: TrackedCall) -> bool:
        """Whether `call` was placed by `/call test`, or is one called again from such a call
        (its attempt's origin says so, or that of the attempt it repeats)."""
        attempt_id = call.attempt_id
        for _ in range(MAX_REPEATS_FOLLOWED):
            if self._audit is None or attempt_id is None:
                return False
            record = await self._audit.record(attempt_id)
            if record is None or record.origin != CALL_AGAIN_ORIGIN:
                return record is not None and record.origin == TEST_ORIGIN
            attempt_id = record.repeat_of
        return False

    async def _still_their_number(self, call: TrackedCall) -> None:
        """A test call rings only its tester's own number (`/call test`): once their profile or
        [people] gives another (the test rang a stranger: a typo since fixed), the number this
        call kept is no longer theirs to ring again."""
        if await self._own_number(call.requester_id) != call.e164:
            raise NoLongerTheirNumber()

    async def _noted(self, call: TrackedCall, kind: EventKind, click: ButtonClick, what: str,
                     **fields: str) -> None:
        """What `click` did, done: `kind` in the audit trail, `fields` on the call's row (both
        waiting for a failing database), then the call's status message drawn again."""
        await self._record(call, kind, click)
        await until_database_answers(lambda: self._store.update(call.id, **fields),
                                     f"{what} call {call.id}",
                                     extra={"call_id": call.id, "user_id": click.user_id})
        await self._follower.refresh(call.id)

    async def _flow_still_there(self, call: TrackedCall) -> None:
        """A flow deleted since the call is told by the name the person saw (FlowGone), not
        refused as an ID they never typed, with advice about names and slugs."""
        try:
            await self._catalog.resolve_flow(call.flow_id)
        except FlowNotFound:
            raise FlowGone(call.flow_name) from None
        except EvoVoiceError:
            pass  # the call's own checks ask again, and tell what went wrong

    @staticmethod
    def _again(call: TrackedCall, click: ButtonClick) -> CallRequest:
        """The request Call again makes: the call's number and flow, by whoever clicked."""
        return CallRequest(
            team_id=call.team_id,
            user_id=click.user_id,
            channel_id=call.channel_id,
            number_text=call.e164 or "",
            flow_text=call.flow_id,
            caller_id_text=call.caller_id,
            response_url=click.response_url,
            idempotency_key=f"again:{call.id}",
            claim_after_check=True,
            origin=CALL_AGAIN_ORIGIN,
            repeat_of=call.attempt_id,
            # The button's own confirm dialog asked "call again?" and named the number's country
            # (status_views.py), for whoever clicks: don't ask twice.
            confirmed=frozenset({Reason.REPEAT, Reason.REGION}),
        )

    async def _authorised(self, click: ButtonClick) -> TrackedCall:
        call = await self._load(click)
        if click.user_id != call.requester_id:
            # A failed group lookup (GroupLookupFailed) is told like any refusal.
            roles = await self._access.roles_of(click.user_id)
            if roles.isdisjoint(KNOWN_ROLES):
                logger.info("button of call %s refused to %s", call.id, click.user_id,
                            extra={"call_id": call.id, "user_id": click.user_id})
                raise NotAllowedOnCall()
        return call

    async def _load(self, click: ButtonClick) -> TrackedCall:
        """The call behind the button, if the click really came from its status message."""
        call = await self._store.get(click.row_id())
        if call is None:
            raise ButtonExpired()
        if (call.status_ts is None and call.following
                and click.came_from(call.team_id, call.channel_id, click.message_ts)):
            # Slack shows the message as soon as it takes it; the bot writes down its ts right
            # after (longer while the database fails). Until then no click can be matched to it,
            # and "no longer works" would send the person away from a call that is live.
            raise ButtonNotReady()
        if not click.came_from(call.team_id, call.channel_id, call.status_ts):
            raise ButtonExpired()
        return call

    async def _record(
        self, call: TrackedCall, kind: EventKind, click: ButtonClick, reason: str | None = None
    ) -> None:
        if self._audit is None or call.attempt_id is None:
            return
        try:
            # Kept until the database answers again (bot/audit/spool.py): never lost to it.
            await self._audit.event(
                call.attempt_id, kind, actor_id=click.user_id, reason=reason,
                session_id=call.session_id, wait_for_database=True,
            )
        except Exception:
            logger.exception("recording %s of call %s failed", kind, call.id,
                             extra={"call_id": call.id})

    async def _tell(self, click: ButtonClick, exc: CallbotError) -> None:
        await self._notifier.tell(
            user_id=click.user_id,
            channel_id=click.channel_id,
            response_url=click.response_url,
            message=views.refusal(describe(exc)),
        )
