"""The bot against Evo Voice as the evidence says it behaves (docs/evovoice.md), end to end.

Each test is a finding of issue #12 and fails on the bot as it was before: a Manager-only login
hanging up (EndSession needs the role User), a refused login that is not a 401, the other host, a
403 that is not a missing role, the session lookup under every plausible reading of its filters,
listings under every reading of `all=true`, and the reading of a session's fields.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.calls.form import FormField
from bot.calls.status_views import HANG_UP_ACTION
from bot.config import ConfigError
from bot.evovoice.client import FIND_MAX_PAGES, FIND_PAGE_SIZE
from bot.ops.check_evovoice_requests import PROBE_NUMBER
from bot.ops.findings import Status
from bot.standins.evovoice import (
    Acted, ErrorStatus, EvoVoiceStandIn, Gated, NoContent, Recorded,
)
from bot.standins.evovoice.recorded import reads
from bot.standins.evovoice.sessions import END_DATE_READINGS
from bot.standins.slack import SlackStandIn
from tests.conftest import (
    EVO_PASSWORD,
    EVO_USER,
    FLOWS,
    POLICY_NO_REPEAT_QUESTION,
    BotFactory,
    BotUnderTest,
    until,
)
from tests.follow_helpers import (
    FAST, FULL, click, connected_call, looked_for_long_enough, placed_call, poll_now, polls_ahead,
    services, status_message, status_ts_recorded, wait_for_edit,
)
from tests.checkups import by_subject, check
from tests.interactions import open_form
from tests.escalations import (
    ALICE,
    BOB,
    click_stop,
    dialled,
    escalation_message,
    open_on_message,
    session_of,
    start,
    submit,
)
from tests.escalations import wait_for_edit as wait_for_escalation_edit

MODES = pytest.mark.parametrize("mode", ["http", "socket"])
NO_ANSWER_FROM_ALICE = "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s"

# ----------------------------------------------------------------------------------- hanging up


async def until_sent(bot: BotUnderTest, matches: Callable[[Recorded], bool]) -> list[Recorded]:
    """The requests Evo Voice received that ``matches``, once there is one."""
    await until(lambda: any(matches(r) for r in bot.evo.requests))
    return [r for r in bot.evo.requests if matches(r)]


@MODES
async def test_a_manager_only_login_hangs_up_with_patch_session(
    bot_factory: BotFactory, mode: str
) -> None:
    bot = await bot_factory(mode, **FAST)
    assert bot.evo.roles == ["Manager"]  # no User: EndSession would answer 403 Invalid Role
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    await status_ts_recorded(bot, 1)  # else the click may come first: "still being set up"

    await click(bot, status, HANG_UP_ACTION)
    await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>")
    assert bot.evo.hang_ups(session_id) == ["PATCH"]
    assert bot.evo.requests_to("DELETE", f"/sessions/{session_id}") == []
    assert all(r.headers["User-Agent"].startswith("callbot/") for r in bot.evo.requests)


@pytest.mark.parametrize("writes_fields", [False, True], ids=["changes-nothing", "stores-field"])
async def test_a_patch_session_that_ends_nothing_never_shows_the_call_as_ended(
    bot_factory: BotFactory, writes_fields: bool
) -> None:
    # PatchSession ending a call is only likely (docs/evovoice-api.md, Hang up): it may change
    # nothing, or store the callState it was sent (the session then reads Disconnected, a sign
    # the bot otherwise takes for the end of a call seen connected) while the call goes on.
    bot = await bot_factory("http", **FAST)
    bot.evo.patch_ends_calls = False
    bot.evo.patch_writes_fields = writes_fields
    status, session_id = await connected_call(bot)
    await click(bot, status, HANG_UP_ACTION)
    [patch] = await until_sent(bot, lambda r: r.method == "PATCH")
    await until_sent(bot, lambda r: r.time > patch.time and bool(reads(r, session_id)))
    await bot.settle()
    await wait_for_edit(bot, status, "📴 Hanging up (asked by <@U0MANAGER>)… If the call goes on")
    assert (bot.evo.sessions[session_id]["callState"] == "Disconnected") is writes_fields
    await bot.settle()
    shown = bot.slack.messages[(status.channel, status.ts)]
    assert "🟢 Connected" in str(shown.text) and HANG_UP_ACTION in str(shown.blocks)
    assert "Ended" not in str(shown.text)
    bot.evo.set_session_state(session_id, callState="Disconnected", ended=True, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended: Completed")


async def test_a_patch_session_read_back_before_its_answer_arrives_is_no_end(
    bot_factory: BotFactory,
) -> None:
    # As above (the session stores the callState sent, the call goes on), but the PatchSession's
    # answer is slow, and the follower reads the session before it comes: the Disconnected it
    # reads then is the bot's own as well. Taken for the end, the call was shown "Ended" and
    # followed no more while its phone rang.
    bot = await bot_factory("http", EVOVOICE_TIMEOUT="30", **FAST)
    bot.evo.patch_ends_calls = False
    bot.evo.patch_writes_fields = True
    status, session_id = await connected_call(bot)
    answered = asyncio.Event()
    bot.evo.queue("PATCH", f"/sessions/{session_id}", Acted(Gated(answered)))
    await click(bot, status, HANG_UP_ACTION)
    [patch] = await until_sent(bot, lambda r: r.method == "PATCH")
    after = patch
    for _ in range(2):  # the first read after it taken in once the second is made
        await poll_now(bot)
        [after, *_] = await until_sent(
            bot, lambda r, t=after.time: r.time > t and bool(reads(r, session_id)))
    assert bot.evo.sessions[session_id]["callState"] == "Disconnected"
    row = await services(bot).db.fetchone("SELECT state, following FROM calls WHERE id = 1")
    assert row is not None and (row["state"], row["following"]) == ("connected", 1)
    answered.set()
    await wait_for_edit(bot, status, "📴 Hanging up (asked by <@U0MANAGER>)… If the call goes on")
    bot.evo.set_session_state(session_id, callState="Disconnected", ended=True, outcome="Completed")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended: Completed")


async def test_a_login_with_user_hangs_up_with_end_session(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    evo.roles = ["Manager", "User"]
    bot, status, session_id = await placed_call(bot_factory)
    await click(bot, status, HANG_UP_ACTION)
    await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>")
    assert bot.evo.hang_ups(session_id) == ["DELETE"]


async def test_end_session_refused_falls_back_to_patch_and_keeps_to_it(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    evo.roles = ["Manager", "User"]
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION, **FAST)
    for n in (1, 2):
        await bot.command(f"{FULL} escalation")
        status = await status_message(bot, n)
        session_id = list(bot.evo.sessions)[-1]
        await status_ts_recorded(bot, n)
        # A User role that the server still doesn't accept for EndSession.
        bot.evo.queue("DELETE", f"/sessions/{session_id}", ErrorStatus(403, "Invalid Role"))
        await click(bot, status, HANG_UP_ACTION)
        await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>")
        assert bot.evo.hang_ups(session_id) == ["PATCH"]
    deletes = [r for r in bot.evo.requests if r.method == "DELETE"]
    assert len(deletes) == 1  # the second hang-up went straight to PatchSession


@pytest.mark.parametrize("status", [405, 501])
async def test_end_session_turned_away_by_a_front_end_falls_back_to_patch_and_keeps_to_it(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, status: int
) -> None:
    """IIS's WebDAV module answers DELETE 405 (an older IIS 501) before ServiceStack sees it, a
    login holding User or not: the method is turned away, not the call, and PatchSession ends it."""
    evo.roles = ["Manager", "User"]
    evo.refused_methods = {"DELETE": status}
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION, **FAST)
    for n in (1, 2):
        await bot.command(f"{FULL} escalation")
        status_post = await status_message(bot, n)
        session_id = list(bot.evo.sessions)[-1]
        await status_ts_recorded(bot, n)
        await click(bot, status_post, HANG_UP_ACTION)
        await wait_for_edit(bot, status_post, "Hung up by <@U0MANAGER>")
        assert bot.evo.hang_ups(session_id) == ["PATCH"]
    assert len([r for r in bot.evo.requests if r.method == "DELETE"]) == 1  # then PATCH at once
    assert all(r.path.startswith("/sessions/sess-") for r in bot.evo.requests
               if r.method in ("DELETE", "PATCH"))


# ServiceStack's role attributes long answered with "Invalid Role" in the status line and no body
# (StatusDescription, then EndRequest); later ones write it in an error body too.
ROLE_REFUSALS = pytest.mark.parametrize("role_refusal", ["body", "status_line"])


@ROLE_REFUSALS
async def test_end_session_refused_by_a_role_revoked_since_start_up_falls_back_to_patch(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, role_refusal: str
) -> None:
    evo.roles = ["Manager", "User"]
    evo.role_refusal = role_refusal
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.roles = ["Manager"]  # User revoked while the bot runs
    await click(bot, status, HANG_UP_ACTION)
    await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>")
    assert bot.evo.hang_ups(session_id) == ["PATCH"]


@ROLE_REFUSALS
async def test_a_manager_role_revoked_since_start_up_is_called_a_missing_role(
    bot_factory: BotFactory, role_refusal: str
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.role_refusal = role_refusal
    bot.evo.roles = ["User"]  # Manager revoked while the bot runs
    await bot.command(f"{FULL} escalation")
    said = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "Call not placed" in str(c.params.get("text")))
    assert "lacks the Manager role" in said.params["text"]
    assert bot.evo.sessions == {}


@MODES
async def test_a_manager_only_login_moves_the_chain_on_and_stops_it(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, clock = await start(bot_factory, mode)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    await wait_for_escalation_edit(bot, escalation, "🔔 ringing…")
    clock.advance(91)
    await wait_for_escalation_edit(bot, escalation, NO_ANSWER_FROM_ALICE)
    await bot.evo.wait_for_posts(2)
    assert bot.evo.hang_ups(session_of(bot, ALICE)) == ["PATCH"]

    await wait_for_escalation_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔")
    await click_stop(bot, escalation, user_id="U0ADMIN")
    await wait_for_escalation_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — ⏹ stopped")
    assert bot.evo.hang_ups(session_of(bot, BOB)) == ["PATCH"]
    assert dialled(bot) == [ALICE, BOB]


# ------------------------------------------------------------------------------ reading sessions


async def test_answered_by_name_while_ringing_does_not_stop_the_escalation(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    alice = session_of(bot, ALICE)
    bot.evo.set_session_state(alice, callState="Ringing", answeredByName="Alice's phone")
    await poll_now(bot)
    await wait_for_escalation_edit(bot, escalation, "🔔 ringing…")
    clock.advance(91)
    await wait_for_escalation_edit(bot, escalation, NO_ANSWER_FROM_ALICE)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]


@pytest.mark.parametrize("placeholder", ["0001-01-01T00:00:00", "/Date(-62135596800000)/",
                                         "1970-01-01T00:00:00Z"])
async def test_a_placeholder_date_completed_does_not_end_a_ringing_call(
    bot_factory: BotFactory, placeholder: str
) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected", dateCompleted=placeholder)
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")
    bot.evo.set_session_state(session_id, callState="Disconnected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")  # Disconnected after being live: over


# Dates no .NET DateTime can hold (past 9999, before year 1), in both of ServiceStack's forms: a
# malformed answer. An unreadable date is no date, as for any other text; the call still ends.
@pytest.mark.parametrize("unreadable", ["/Date(253402300800000)/", "/Date(-99999999999999999)/"])
async def test_a_date_out_of_range_is_unreadable_and_the_call_still_ends(
    bot_factory: BotFactory, unreadable: str
) -> None:
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Disconnected", ended=True,
                              outcome="Completed", dateCompleted=unreadable)
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")


async def test_disconnected_before_anything_happened_is_not_the_end(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(NoContent())
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    [session_id] = bot.evo.sessions
    bot.evo.set_session_state(session_id, callState="Disconnected",
                              dateCompleted="0001-01-01T00:00:00")
    await poll_now(bot)
    status = await status_message(bot)
    bot.evo.set_session_state(session_id, callState="Ringing")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🔔 Ringing")


# ----------------------------------------------------------------------------- finding a call


@pytest.mark.parametrize("offset_hours", [-12, 0, 14])
@pytest.mark.parametrize("sort_honoured", [True, False])
@pytest.mark.parametrize("end_date", END_DATE_READINGS)
async def test_a_call_without_a_session_id_is_found_whatever_the_filters_mean(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, offset_hours: int, sort_honoured: bool,
    end_date: str,
) -> None:
    # endDate's meaning is unconfirmed: a server reading an absent one as startDate's day
    # ("one_day") lists none of today's sessions to a lookup from the day before.
    evo.sessions_utc_offset = dt.timedelta(hours=offset_hours)
    evo.sort_honoured = sort_honoured
    evo.end_date = end_date
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=20)).isoformat()
    for _ in range(60):  # earlier calls to the number: more than a page, older than the attempt
        evo.add_session(toAddress=FULL, dateCreated=yesterday, ended=True,
                        callState="Disconnected")
    evo.add_session(toAddress=FULL + "9", callState="Ringing")  # `to` is a contains filter
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(NoContent())
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    session_id = list(bot.evo.sessions)[-1]
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")
    query = bot.evo.requests_to("GET", "/sessions")[0].query
    asked = dt.date.fromisoformat(query["startDate"])
    assert asked < dt.datetime.now(dt.UTC).date()  # the day before: any time zone
    # ...to the day after tomorrow: any time zone, inclusive or exclusive.
    assert dt.date.fromisoformat(query["endDate"]) - dt.datetime.now(dt.UTC).date() >= \
        dt.timedelta(days=2)
    assert "all" not in query


@pytest.mark.parametrize("ahead", [-120, 120], ids=["evo-voice-behind", "evo-voice-ahead"])
@pytest.mark.parametrize("zone", [True, False], ids=["dates-in-utc", "dates-without-zone"])
async def test_a_call_without_a_session_id_is_found_whatever_evo_voice_s_clock_says(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, ahead: int, zone: bool
) -> None:
    """Nothing says Evo Voice's clock and the bot's host's agree: two minutes apart, the call's
    session is dated two minutes from the attempt, and someone else's call to the number ten
    seconds before it is closer to the attempt on the bot's clock. Each answer's Date header
    says how far apart the clocks are."""
    evo.clock_offset = dt.timedelta(seconds=ahead)
    evo.session_dates_offset = None if zone else dt.timedelta(0)
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(NoContent())
    earlier = (evo.now() - dt.timedelta(seconds=10)).isoformat(timespec="milliseconds")
    bot.evo.add_session(toAddress=FULL, dateCreated=earlier.replace("+00:00", "Z"), ended=True,
                        callState="Disconnected", outcome="Completed")
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    session_id = list(bot.evo.sessions)[-1]
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")


async def test_a_server_that_refuses_the_sort_still_finds_every_call(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    """sortField's values are undocumented: a server may refuse DateCreated. Lookups then go
    unsorted (the bot filters and orders them itself), and stop asking for the sort."""
    evo.sort_refused = True
    bot = await bot_factory("http", **FAST)
    for n, number in enumerate((FULL, "+18145551234"), start=1):
        bot.evo.queue_outgoing(NoContent())
        await bot.command(f"{number} escalation")
        status = await status_message(bot, n)
        session_id = list(bot.evo.sessions)[-1]
        await status_ts_recorded(bot, n)
        bot.evo.set_session_state(session_id, callState="Connected")
        await poll_now(bot)
        await wait_for_edit(bot, status, "🟢 Connected")
    lookups = [r.query for r in bot.evo.requests_to("GET", "/sessions") if "to" in r.query]
    assert "sortField" in lookups[0] and "sortField" not in lookups[1]
    assert lookups[1]["to"] == FULL
    assert all("sortField" not in query for query in lookups[1:])
    assert [query["to"] for query in lookups[1:]] == [FULL, "+18145551234"]


@pytest.mark.parametrize("form", ["tel", "digits"])
async def test_a_call_is_followed_however_its_session_writes_the_number(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, form: str
) -> None:
    """Nothing public says how a session's `toAddress` writes the number dialled (sessions are
    voice, chat or fax: not every address is a number). The POST's answer naming a session to
    `tel:+18144043093`, or to 18144043093, names this call's session all the same."""
    evo.to_address_form = form
    bot = await bot_factory("http", **FAST)
    status, session_id = await connected_call(bot)


@pytest.mark.parametrize("form", ["tel", "digits"])
async def test_a_call_without_a_session_id_is_found_however_its_session_writes_the_number(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, form: str
) -> None:
    # `to` matches by substring: `to=+18144043093` lists `tel:+18144043093`, and the bot must
    # see it is the number; it lists no `18144043093`, which is asked for without the plus.
    evo.to_address_form = form
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(NoContent())
    status, session_id = await connected_call(bot)


async def test_a_text_to_the_number_is_never_taken_for_the_call(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    """Sessions are voice, chat or fax (`channel`), and a call is a voice session only: a text
    to the same person while the call was being set up (a monitoring system paging them by SMS
    too) is closer to the attempt than the call itself, yet it is not the call."""
    bot = await bot_factory("http", **FAST)
    set_up = asyncio.Event()
    bot.evo.queue_outgoing(Gated(set_up, NoContent()))  # the session is made once set up
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    bot.evo.add_session(toAddress=FULL, channel="Chat", ended=True, callState="Disconnected",
                        dateCompleted=now)
    set_up.set()
    status = await status_message(bot)
    call = list(bot.evo.sessions)[-1]
    assert bot.evo.sessions[call]["channel"] == "Voice"
    bot.evo.set_session_state(call, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")


async def test_a_lookup_that_keeps_failing_ends_as_not_found(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    evo.default_behaviours[("GET", "/sessions")] = ErrorStatus(400, "Invalid sortField")
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(NoContent())
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    await looked_for_long_enough(bot)
    await wait_for_edit(bot, status, "I could not look for it to follow")


async def test_a_failing_lookup_answered_late_counts_its_failure_from_when_it_was_sent(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    # The first look fails only once CALL_FIND_SECONDS have gone by (a slow 400): the lookup has
    # been failing since it was sent, not since its answer came. Timed from the answer, a look
    # answered late started the count afresh, and the call was looked for longer than said.
    gate = asyncio.Event()
    slow = Gated(gate, ErrorStatus(400, "Invalid sortField"))
    evo.default_behaviours[("GET", "/sessions")] = slow
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(NoContent())
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    await until(lambda: any("to" in r.query for r in bot.evo.requests_to("GET", "/sessions")))
    polls_ahead(bot, bot.runtime.settings.call_find_seconds + 1)
    gate.set()
    await wait_for_edit(bot, status, "I could not look for it to follow")


async def outcome_unknown_then_not_found(bot_factory: BotFactory) -> tuple[BotUnderTest, str]:
    """A call whose POST Evo Voice carried out and answered 500, given up as not found after
    CALL_FIND_SECONDS: the bot, and its status message's text then."""
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(Acted(ErrorStatus(500)))
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    await looked_for_long_enough(bot)
    await wait_for_edit(bot, status, "❔")
    return bot, bot.slack.messages[(status.channel, status.ts)].text


async def test_a_call_of_unknown_outcome_never_looked_up_is_not_called_most_likely_not_placed(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    """The POST failed after Evo Voice placed the call, and every lookup failed too: nothing was
    seen either way, so the requester must not read "most likely not placed" above a Call again
    button, and ring the person twice."""
    evo.default_behaviours[("GET", "/sessions")] = ErrorStatus(500, "Timeout expired")
    bot, shown = await outcome_unknown_then_not_found(bot_factory)
    assert "most likely not placed" not in shown
    assert "whether it was placed is unknown" in shown and "HTTP 500" in shown, shown
    assert len(bot.evo.sessions) == 1 and len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize("page_honoured", [True, False], ids=["paged", "first-page-only"])
async def test_a_lookup_that_could_not_read_every_page_does_not_call_it_most_likely_not_placed(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, page_honoured: bool
) -> None:
    """More sessions to the number since the day before than a look reads (a monitoring system
    texting the same person through Evo Voice), listed oldest first, or always the first page:
    the call may be among those never read, so the requester must not read "most likely not
    placed" above a Call again button."""
    evo.sort_honoured = False
    evo.page_honoured = page_honoured
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=20)).isoformat()
    for _ in range(FIND_MAX_PAGES * FIND_PAGE_SIZE + 10):
        evo.add_session(toAddress=FULL, channel="Chat", dateCreated=yesterday, ended=True)
    bot, shown = await outcome_unknown_then_not_found(bot_factory)
    assert "most likely not placed" not in shown
    assert "whether it was placed is unknown" in shown and "more sessions" in shown, shown
    assert len(bot.evo.outgoing_posts) == 1


# ------------------------------------------------------------------------------- owned numbers


@pytest.mark.parametrize("form", ["tel", "digits"])
async def test_owned_numbers_are_caller_ids_however_evo_voice_writes_them(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, form: str
) -> None:
    """That an endpoint's `phoneNumber` holds the E.164 is only likely, and nothing says how it
    writes it: as a `tel:` URI, or without its plus, it is the same number. The policy's
    default caller ID is one of them (start-up checks it), a /call may name another, and the
    form offers them to choose from; Evo Voice is sent each as the E.164 it wants."""
    evo.phone_number_form = form
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION, **FAST)
    await bot.command(f"{FULL} escalation")
    await bot.command(f"{FULL} escalation +1 814 555 0101")
    first, second = await bot.evo.wait_for_posts(2)
    assert first.json["callerId"] == "+18145550100" and second.json["callerId"] == "+18145550101"
    caller = next(b for b in (await open_form(bot)).versions[-1]["blocks"]
                  if b.get("block_id") == FormField.CALLER_ID)
    assert caller["element"]["initial_option"]["value"] == "+18145550100"
    assert [o["value"] for o in caller["element"]["options"]] == ["+18145550100", "+18145550101"]


# -------------------------------------------------------------------------------------- listings


@pytest.mark.parametrize("reading", ["everything", "every_page", "ignored"])
async def test_250_flows_are_each_listed_once_whatever_all_means(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, reading: str
) -> None:
    evo.all_reading = reading
    evo.flows[:] = [dict(f) for f in FLOWS] + [
        {"id": f"flow-{n}", "name": f"Flow {n}", "accountId": "acct-1"} for n in range(250)
    ]
    bot = await bot_factory("http", **FAST)
    _, url = await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    assert bot.evo.outgoing_posts[0].json["flowId"] == "flow-esc"
    assert all("all" not in r.query for r in bot.evo.requests_to("GET", "/flows"))


# -------------------------------------------------------------------------------------- logging in


@pytest.mark.parametrize("answer", ["unauthenticated", "no_content"])
async def test_a_refused_login_names_the_url_and_the_host_where_it_works(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, slack: SlackStandIn, policy_path: Path,
    answer: str,
) -> None:
    evo.refused_login = answer
    evo.password = "not-the-bot's"
    async with EvoVoiceStandIn(username=EVO_USER, password=EVO_PASSWORD) as other:
        with pytest.raises(ConfigError) as raised:
            await bot_factory("http")
        assert "EVOVOICE_URL" in raised.value.problems[0]
        assert "refused the login" in raised.value.problems[0]

        with pytest.raises(ConfigError) as raised:
            await bot_factory("http", EVOVOICE_OTHER_URL=other.url)
        assert f"set EVOVOICE_URL={other.url}" in raised.value.problems[0]

        findings = by_subject(await check(slack, evo, policy_path, EVOVOICE_OTHER_URL=other.url))
    login = findings["Evo Voice login"]
    assert login.status is Status.FAIL and f"your login works at {other.url}" in login.detail
    assert login.fix == f"set EVOVOICE_URL={other.url}"


async def test_a_403_that_is_not_invalid_role_is_not_called_a_missing_role(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(ErrorStatus(403, "Access denied"))
    await bot.command(f"{FULL} escalation")
    said = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "Call not placed" in str(c.params.get("text")))
    assert "not a missing role" in said.params["text"]
    assert "Manager role" not in said.params["text"]


# ------------------------------------------------------------------------------- callbot check


async def test_check_tries_every_request_with_the_parameters_the_bot_uses(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = by_subject(await check(slack, evo, policy_path))
    assert findings["Evo Voice hang-up"].status is Status.PASS
    assert "PatchSession" in findings["Evo Voice hang-up"].detail
    assert "lacks User" in findings["Evo Voice hang-up"].detail
    for subject in ("Evo Voice flows listing", "Evo Voice phone numbers",
                    "Evo Voice session lookup"):
        assert findings[subject].status is Status.PASS, findings[subject]
    # Finding nothing, the lookup asks again without the plus (a toAddress may be written so).
    lookup, again = evo.requests_to("GET", "/sessions")
    assert lookup.query["to"] == PROBE_NUMBER and again.query["to"] == PROBE_NUMBER[1:]
    assert PROBE_NUMBER not in findings["Evo Voice session lookup"].detail  # masked
    assert not [r for r in evo.requests if r.method not in ("GET",)]  # nothing dialled or ended

    evo.roles = ["Manager", "User"]
    findings = by_subject(await check(slack, evo, policy_path))
    assert "EndSession" in findings["Evo Voice hang-up"].detail


async def test_check_names_the_fields_when_no_endpoint_has_a_number(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    evo.phone_numbers[:] = [{"id": "ep-1", "name": "Main", "number": "8145550100",
                             "accountId": "acct-1"}]
    findings = by_subject(await check(slack, evo, policy_path))
    numbers = findings["Evo Voice phone numbers"]
    assert numbers.status is Status.FAIL
    assert "none has an E.164 number" in numbers.detail
    assert "number" in numbers.detail and "name" in numbers.detail


async def test_check_says_when_evo_voice_refuses_the_sort_and_passes_without_it(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    evo.sort_refused = True
    lookup = by_subject(await check(slack, evo, policy_path))["Evo Voice session lookup"]
    assert lookup.status is Status.PASS, lookup
    assert "sortField=DateCreated was refused" in lookup.detail
    assert "sortField" not in lookup.detail.split(" (")[0]  # the query that answered
    assert PROBE_NUMBER not in lookup.detail


async def test_check_says_when_the_session_lookup_is_refused(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    for _ in range(2):  # with the sort, then without it
        evo.queue("GET", "/sessions", ErrorStatus(
            400, "Validation failed", field_errors=[{"fieldName": "AccountIds",
                                                     "errorCode": "Invalid",
                                                     "message": "Unknown account"}]))
    lookup = by_subject(await check(slack, evo, policy_path))["Evo Voice session lookup"]
    assert lookup.status is Status.FAIL
    assert "AccountIds: Unknown account" in lookup.detail
    evo.queue("GET", "/sessions", ErrorStatus(403, "Access denied"))
    lookup = by_subject(await check(slack, evo, policy_path))["Evo Voice session lookup"]
    assert lookup.status is Status.FAIL and "not a missing role" in lookup.detail
