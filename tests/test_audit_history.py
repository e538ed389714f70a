"""The audit trail (every kind of attempt, append-only, keyed number hashes) and `/call history`."""

from __future__ import annotations

import datetime as dt
import re

import hashlib
import hmac
from typing import Any

import pytest

from bot.standins.evovoice import ErrorStatus, EvoVoiceStandIn
from bot.standins.slack import ApiCall, slash_command_body
from bot.audit.trail import AuditLog
from bot.storage.database import POSTGRESQL, Connection, Database, IntegrityError
from bot.storage.number_hash import KEY_NAME, NumberHasher
from tests.conftest import POLICY_NO_REPEAT_QUESTION, BotFactory, BotUnderTest
from tests.database_locks import tables_locked, with_short_lock_timeout
from tests.databases import Noting, on_both_databases
from tests.follow_helpers import (
    FAST,
    FULL,
    MASKED,
    OTHER,
    audit_records,
    end_session,
    history,
    lines,
    placed_call,
    services,
    status_message,
    wait_for_edit,
)


def database(bot: BotUnderTest) -> Database:
    return services(bot).db


async def all_audit_text(bot: BotUnderTest) -> str:
    rows = await database(bot).fetchall("SELECT * FROM audit_attempts")
    rows += await database(bot).fetchall("SELECT * FROM audit_events")
    return "\n".join(str(tuple(row)) for row in rows)


@on_both_databases
async def test_every_kind_of_attempt_is_recorded(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION)
    evo, slack = bot.evo, bot.slack

    await bot.command(f"{FULL} escalation")  # placed
    await bot.settle()
    evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    await bot.command(f"{FULL} escalation")  # failed
    await bot.settle()
    evo.queue_outgoing(ErrorStatus(500))
    await bot.command(f"{FULL} escalation")  # unknown
    await bot.settle()
    # One at a time: the records are compared in the order they were written.
    await bot.command(f"{FULL} escalation", user_id="U0INTRUDER")  # denied
    await bot.settle()
    await bot.command("+1 900 555 0123 escalation")  # refused: premium rate
    await bot.settle()
    await bot.command(f"{FULL} escalate-now")  # refused: no such flow
    await bot.settle()
    redelivered = slash_command_body(
        text=f"{OTHER} daily-check", response_url=slack.response_url(), trigger_id="77.88.dup"
    )
    await bot.post_signed(redelivered)  # placed
    await bot.settle()
    await bot.post_signed(redelivered)  # duplicate
    await bot.settle()
    services(bot).catalog.forget()
    evo.queue("GET", "/flows", ErrorStatus(500))
    await bot.command(f"{FULL} escalation")  # failed before dialling: flows unreadable
    await bot.settle()
    slack.fail("chat.postMessage", "channel_not_found")
    url = slack.response_url()
    slack.expire_response_url(url)
    await bot.command(f"{FULL} escalation", response_url=url)  # placed: told by a DM
    await bot.settle()

    records = list(reversed(await audit_records(bot)))  # oldest first
    summary = [
        (r.decision, r.result.kind if r.result else None, r.reason) for r in records
    ]
    assert summary == [
        ("allowed", "placed", None),
        ("allowed", "failed", None),
        ("allowed", "unknown", None),
        ("denied", None, "RoleDenied"),
        ("refused", None, "NumberRejected:type_not_allowed"),
        ("refused", None, "FlowNotFound"),
        ("allowed", "placed", None),
        ("duplicate", None, None),
        ("failed", None, "ServerError:500"),
        ("allowed", "placed", None),
    ]
    assert records[1].result is not None and records[1].result.reason == "BadRequest:400"
    assert records[2].result is not None
    assert records[2].result.reason == "OutcomeUnknown:HTTP 500"
    placed = records[0]
    assert (placed.team_id, placed.user_id, placed.channel_id) == ("T0TEAM", "U0MANAGER", "C0OPS")
    assert (placed.flow, placed.flow_id, placed.caller_id) == (
        "Escalation",
        "flow-esc",
        "+18145550100",
    )
    assert placed.number_masked == MASKED
    assert placed.session_id == "sess-1"
    assert placed.at.endswith("Z")  # UTC
    assert records[3].user_id == "U0INTRUDER" and records[3].number_masked == MASKED
    assert records[5].flow == "escalate-now"

    # One keyed hash per number, the same whether the attempt was placed or refused.
    [key_row] = await database(bot).fetchall(
        "SELECT value FROM hash_keys WHERE name = ?", (KEY_NAME,)
    )
    expected = hmac.new(bytes.fromhex(key_row[0]), FULL.encode(), hashlib.sha256).hexdigest()
    assert {r.number_hash for r in records if r.number_masked == MASKED} == {expected}
    assert records[6].number_hash != expected
    assert "8144043093" not in await all_audit_text(bot)
    assert "5551234" not in await all_audit_text(bot)
    # /call history says what became of each, in plain words.
    shown = list(reversed(lines(await history(bot))))
    said = [
        "📞 placed, in progress", "❌ not placed (BadRequest:400)",
        "⚠️ outcome unknown (OutcomeUnknown:HTTP 500)", "⛔ denied (RoleDenied)",
        "🚫 refused (NumberRejected:type_not_allowed)", "🚫 refused (FlowNotFound)",
        "📞 placed, in progress", "♻️ duplicate, ignored",
        "⚠️ could not be checked (ServerError:500)", "📞 placed, in progress",
    ]
    assert len(shown) == len(said)
    assert [line.split(" · ")[4].startswith(what)
            for line, what in zip(shown, said, strict=True)] == [True] * len(said)


async def test_a_long_flow_name_is_recorded_clipped(bot_factory: BotFactory) -> None:
    # The trail is append-only: whatever is written stays forever, so typed text is bounded.
    bot = await bot_factory("http")
    await bot.command(f"{FULL} {'x' * 300}")
    await bot.settle()
    [record] = await audit_records(bot)
    assert record.decision == "refused" and record.flow == "x" * 99 + "…"


async def test_a_number_typed_in_the_flow_s_words_is_recorded_masked(
    bot_factory: BotFactory,
) -> None:
    # Whatever follows the number up to a trailing caller ID is read as the flow's name, a note
    # with another number in it too; refused, it is recorded as typed. The trail is append-only
    # and shown to every Manager by /call history: it keeps no number in full.
    bot = await bot_factory("http")
    await bot.command(f"{FULL} wake-up-call for {OTHER} (Dana)")
    await bot.command(f"{FULL} call back on (814) 555-1234 asap")
    await bot.settle()
    records = await audit_records(bot)
    assert [r.reason for r in records] == ["FlowNotFound", "FlowNotFound"]
    assert [r.flow for r in records] == ["call back on (•••34 asap",
                                         "wake-up-call for +1 814 ••• 1234 (Dana)"]
    assert "5551234" not in await all_audit_text(bot)
    assert "555-1234" not in await all_audit_text(bot)
    shown = "\n".join(lines(await history(bot)))
    assert "5551234" not in shown and "555-1234" not in shown


async def test_a_number_written_with_slashes_in_the_flow_s_words_is_recorded_masked(
    bot_factory: BotFactory,
) -> None:
    # Slashes part a number's groups in many places' habits (814/555/1234, 089/1234567), and the
    # bot itself reads a number so written as one: among the words, it is masked as any other.
    bot = await bot_factory("http")
    await bot.command(f"{FULL} call back on 814/555/1234 asap")
    await bot.settle()
    [record] = await audit_records(bot)
    assert (record.reason, record.flow) == ("FlowNotFound", "call back on •••34 asap")
    assert "555/1234" not in await all_audit_text(bot)
    assert "555/1234" not in "\n".join(lines(await history(bot)))


@pytest.mark.parametrize("written", [
    "814\u2013555\u20131234",  # en dashes: what editors and chat apps turn hyphens into
    "814\u2011555\u20111234",  # non-breaking hyphens
    "814\u00a0555\u00a01234",  # no-break spaces, as pasted from a web page
    "(814)\u2212555\u22121234",  # minus signs
    "814---555---1234",  # more marks than a number is written with
])
async def test_a_number_written_as_pasted_in_the_flow_s_words_is_recorded_masked(
    bot_factory: BotFactory, written: str,
) -> None:
    # Pasted from a document or a chat, a number's groups are parted by dashes and spaces other
    # than ASCII's: among the words, it is masked as one typed with plain hyphens is.
    bot = await bot_factory("http")
    await bot.command(f"{FULL} call back on {written} asap")
    await bot.settle()
    [record] = await audit_records(bot)
    assert record.reason == "FlowNotFound" and "•••34 asap" in (record.flow or ""), record.flow
    plain = re.sub(r"\D", "", await all_audit_text(bot) + "\n".join(lines(await history(bot))))
    assert "5551234" not in plain


@on_both_databases
async def test_the_audit_trail_is_append_only(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    db = database(bot)
    for statement in (
        "UPDATE audit_attempts SET decision = 'denied'",
        "DELETE FROM audit_attempts",
        "UPDATE audit_events SET kind = 'failed'",
        "DELETE FROM audit_events",
    ):
        with pytest.raises(IntegrityError, match="append-only"):
            await db.execute(statement)
    [record] = await audit_records(bot)
    assert record.decision == "allowed" and [e.kind for e in record.events] == ["placed"]


async def test_a_configured_hash_key_is_used(bot_factory: BotFactory) -> None:
    key = "a-long-secret-for-the-audit-hash"
    bot = await bot_factory("http", AUDIT_HASH_KEY=key)
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    [record] = await audit_records(bot)
    assert record.number_hash == hmac.new(key.encode(), FULL.encode(), hashlib.sha256).hexdigest()
    # No key generated and kept (the table holds only the database's id: bot/audit/spool.py).
    assert await database(bot).fetchall(
        "SELECT * FROM hash_keys WHERE name = ?", (KEY_NAME,)
    ) == []


async def test_the_generated_key_survives_a_restart(bot_factory: BotFactory) -> None:
    first = await bot_factory("http")
    await first.command(f"{FULL} escalation")
    await first.settle()
    await first.runtime.stop()
    second = await bot_factory("http")
    await second.command(f"{FULL} escalation")
    await second.settle()
    hashes = {r.number_hash for r in await audit_records(second)}
    assert len(hashes) == 1


# ---------------------------------------------------------------------------------- history


async def test_history_is_for_managers_and_administrators_only(bot: BotUnderTest) -> None:
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    answer = await history(bot, user_id="U0INTRUDER")
    assert "not allowed to see the call history" in answer["text"]
    assert "<@U0MANAGER>" not in answer["text"]
    answer = await history(bot, user_id="U0LEAD2")  # a Manager through a user group
    [line] = lines(answer)
    assert "<@U0MANAGER>" in line and MASKED in line and "Escalation" in line
    assert FULL not in answer["text"]


async def test_history_lists_the_calls_of_people_from_other_teams(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    # A Slack Connect or Enterprise Grid user calls from this workspace under their own team.
    from_elsewhere = slash_command_body(text=f"{OTHER} escalation", user_id="U0ADMIN",
                                        team_id="T0PARTNER", response_url=bot.slack.response_url())
    await bot.post_signed(from_elsewhere)
    await bot.settle()  # one at a time: newest first is compared
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    shown = lines(await history(bot))
    assert len(shown) == 2 and "<@U0ADMIN>" in shown[1] and "+1 814 ••• 1234" in shown[1]


async def test_history_shows_the_last_20_newest_first(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    for i in range(21):
        await bot.command(f"{FULL} no-such-flow-{i}")
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice")
    await wait_for_edit(bot, status, "Connected")
    end_session(bot, session_id, after_seconds=65, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()

    shown = lines(await history(bot))
    assert len(shown) == 20
    assert "answered by Alice" in shown[0] and "1m 05s" in shown[0] and session_id in shown[0]
    assert "no-such-flow-20" in shown[1] and "refused (FlowNotFound)" in shown[1]
    assert "no-such-flow-2”" in shown[-1]  # the oldest two are left out
    assert not any("no-such-flow-1”" in line or "no-such-flow-0”" in line for line in shown)


async def test_history_shows_each_time_in_the_readers_own_time_zone(
    bot_factory: BotFactory,
) -> None:
    # Each line's time was UTC in a code span: a Manager in Berlin or Tokyo had to work out
    # when a call was made. Slack's `<!date>` shows every reader their own zone, UTC the fallback.
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    [record] = await audit_records(bot)
    at = dt.datetime.fromisoformat(record.at.replace("Z", "+00:00"))
    answer = await history(bot)
    [line] = lines(answer)
    assert line.startswith(f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}"
                           f"|{at:%Y-%m-%d %H:%M} UTC> · <@U0MANAGER> · {MASKED} · ")
    assert line in answer["blocks"][1]["text"]["text"]


async def test_history_counts_a_call_answered_by_nobody_named_as_picked_up(
    bot_factory: BotFactory,
) -> None:
    # Evo Voice does not always name who answered: the call connecting is what counts, as picked
    # up by a person or a voicemail (no [oncall] ack_outcomes here to say a person heard it).
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected")
    await wait_for_edit(bot, status, "Connected")
    end_session(bot, session_id, after_seconds=65, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    [line] = lines(await history(bot))
    assert line.split(" · ")[4].startswith(
        "☎️ picked up (a person or a voicemail), Completed, 1m 05s")


async def test_a_number_that_cannot_be_read_is_recorded_masked(bot_factory: BotFactory) -> None:
    # Refused as unreadable, the number typed is still kept masked, never as typed.
    bot = await bot_factory("http")
    await bot.command("+18144043093x escalation")
    await bot.settle()
    [record] = await audit_records(bot)
    assert record.decision == "refused"
    assert "3093" not in await all_audit_text(bot)


async def test_a_number_given_as_who_answered_is_kept_masked_in_the_audit_trail(
    bot_factory: BotFactory,
) -> None:
    # Evo Voice names the answering party as it likes, a phone number too: the audit trail keeps
    # no full number, whoever wrote it.
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName=OTHER)
    await wait_for_edit(bot, status, "Connected")
    end_session(bot, session_id, after_seconds=65, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    assert "5551234" not in await all_audit_text(bot)
    [record] = await audit_records(bot)
    answered = record.last("answered")
    assert answered is not None and answered.answered_by == "+1 814 ••• 1234"
    [line] = lines(await history(bot))
    assert "answered by +1 814 ••• 1234" in line


async def test_numbers_in_what_evo_voice_says_of_a_call_are_kept_and_shown_masked(
    bot_factory: BotFactory,
) -> None:
    # Who answered and the outcome are Evo Voice's own words, which may hold a number: the call's
    # row keeps them past the 24 hours its own number is kept, and the status message shows them.
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected",
                              answeredByName="Voicemail of 814-555-1234")
    await wait_for_edit(bot, status, "Connected")
    end_session(bot, session_id, after_seconds=65, outcome=f"Message left for {OTHER}")
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    assert "5551234" not in "".join(ch for ch in (status.text or "") if ch.isdigit())
    assert "Message left for +1 814 ••• 1234" in (status.text or "")
    [row] = await services(bot).db.fetchall("SELECT answered_by, outcome FROM calls")
    assert tuple(row) == ("Voicemail of •••34", "Message left for +1 814 ••• 1234")
    assert "5551234" not in await all_audit_text(bot)


@pytest.mark.parametrize("invisible", ["\u200b", "\u200c", "\u2060", "\ufeff", "\u00ad",
                                       "\u200e", "\u200f"])
async def test_a_number_evo_voice_spells_with_invisible_characters_is_masked_too(
    bot_factory: BotFactory, invisible: str
) -> None:
    # A zero-width space, a joiner or a direction mark between each digit (a caller's keypad
    # entry, written back by a flow): no two digits touched, so every digit showed, one "number"
    # each, in Slack, the calls table and the audit trail.
    bot, status, session_id = await placed_call(bot_factory)
    end_session(bot, session_id, after_seconds=65,
                outcome="Call back on " + invisible.join("8145551234"))
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    [row] = await services(bot).db.fetchall("SELECT outcome FROM calls")
    for seen in (status.text or "", row[0], await all_audit_text(bot)):
        assert "5551234" not in "".join(ch for ch in seen if ch.isdigit()), seen
    assert "Call back on •••34" in (status.text or "")


def users_list(members: dict[str, dict[str, str]]) -> Any:
    def answer(call: ApiCall) -> dict[str, Any]:
        return {
            "ok": True,
            "members": [
                {
                    "id": uid,
                    "name": m["name"],
                    "deleted": False,
                    "profile": {
                        "display_name": m.get("display", ""),
                        "real_name": m.get("real", ""),
                    },
                }
                for uid, m in members.items()
            ],
            "response_metadata": {"next_cursor": ""},
        }

    return answer


async def test_history_filters_by_person(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    await bot.command(f"{OTHER} escalation", user_id="U0MANAGER")
    await bot.command(f"{FULL} daily-check", user_id="U0LEAD1")
    await bot.settle()
    bot.slack.on(
        "users.list",
        users_list(
            {
                "U0LEAD1": {"name": "lead1", "display": "Lee"},
                "U0MANAGER": {"name": "manager", "display": "Mana"},
            }
        ),
    )

    for args in ("<@U0LEAD1|lead1>", "<@U0LEAD1>", "U0LEAD1", "@lead1", "@LEE"):
        shown = lines(await history(bot, args))
        assert len(shown) == 2, (args, shown)
        assert all("<@U0LEAD1>" in line for line in shown)
    answer = await history(bot, "@nobody")
    assert "No one here goes by @nobody" in answer["text"] and "member ID" in answer["text"]


async def test_history_heading_counts_the_calls_it_lists(bot: BotUnderTest) -> None:
    # Two calls by this person: the heading must not promise twenty.
    await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    await bot.command(f"{OTHER} escalation", user_id="U0LEAD1")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    answer = await history(bot, "U0LEAD1")
    heading = str(answer["text"]).splitlines()[0]
    assert len(lines(answer)) == 2 and heading == "*Last 2 calls by <@U0LEAD1>* (newest first)"
    answer = await history(bot, "+1 212 555 0000")
    assert answer["text"].startswith("Last 20 calls to +1 212 ••• 0000: nothing recorded.")


async def test_history_by_name_passes_over_deactivated_accounts(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    await bot.settle()
    members = users_list({"U0LEAD1": {"name": "alex"}, "U0GONE": {"name": "alex"}})

    def with_one_deactivated(call: ApiCall) -> dict[str, Any]:
        answer: dict[str, Any] = members(call)
        for member in answer["members"]:
            member["deleted"] = member["id"] == "U0GONE"  # the old Alex left; the name lives on
        return answer

    bot.slack.on("users.list", with_one_deactivated)
    [line] = lines(await history(bot, "@alex"))
    assert "<@U0LEAD1>" in line


async def test_history_by_name_reads_every_page_and_asks_which_of_several(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    await bot.settle()
    first_page = users_list({"U0MANAGER": {"name": "manager"}})
    second_page = users_list({"U0LEAD1": {"name": "alex"}})

    def paged(call: ApiCall) -> dict[str, Any]:
        if call.params.get("cursor"):
            return second_page(call)  # type: ignore[no-any-return]
        answer: dict[str, Any] = first_page(call)
        answer["response_metadata"] = {"next_cursor": "page-2"}
        return answer

    bot.slack.on("users.list", paged)
    [line] = lines(await history(bot, "@alex"))
    assert "<@U0LEAD1>" in line
    # Two people answer to the name: never one of them picked, whose calls would be shown as
    # the other's.
    bot.slack.on("users.list", users_list(
        {"U0LEAD1": {"name": "alex"}, "U0LEAD2": {"name": "lex", "display": "Alex"}}
    ))
    answer = await history(bot, "@alex")
    assert "Several people go by @alex: U0LEAD1 (alex), U0LEAD2 (lex)" in answer["text"]
    # A name hundreds answer to: as many as fit, then how many more, and what to do still said.
    bot.slack.on("users.list", users_list(
        {f"U0A{n:04d}": {"name": f"alex.{'x' * 20}{n}", "display": "Alex"} for n in range(300)}
    ))
    answer = await history(bot, "@alex")
    shown = answer["blocks"][0]["text"]["text"]
    assert re.search(r" and \d+ more\. Use the member ID of the one you mean\.", shown), (
        shown[-300:])


async def test_history_filters_by_number(bot: BotUnderTest) -> None:
    await bot.command(f"{FULL} escalation")
    await bot.command(f"{OTHER} escalation")
    await bot.command("+1 900 555 0123 escalation", user_id="U0LEAD1")  # refused, still recorded
    await bot.settle()
    answer = await history(bot, "(814) 404-3093")
    shown = lines(answer)
    assert len(shown) == 1 and MASKED in shown[0]
    assert MASKED in str(answer["text"]).splitlines()[0] and "4043093" not in str(answer)
    shown = lines(await history(bot, "+1 900 555 0123"))
    assert len(shown) == 1 and "refused" in shown[0] and "<@U0LEAD1>" in shown[0]
    answer = await history(bot, "+1 212 555 0000")
    assert "nothing recorded" in answer["text"]


async def test_history_filters_by_a_number_typed_in_full_width(bot: BotUnderTest) -> None:
    # A phone keyboard in a CJK input mode types full-width digits: /call reads them, and so
    # must the history's filter.
    await bot.command("＋１ ８１４ ４０４ ３０９３ escalation")
    await bot.command(f"{OTHER} escalation")
    await bot.settle()
    answer = await history(bot, "＋１ （８１４） ４０４－３０９３")
    shown = lines(answer)
    assert len(shown) == 1 and MASKED in shown[0], answer["text"]


async def test_history_explains_a_filter_it_cannot_use(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    answer = await history(bot, "yesterday please")
    assert "Usage: /call history" in answer["text"]
    answer = await history(bot, "+1 814")
    assert "Usage: /call history" in answer["text"]
    assert "can't be a phone number (too few digits)" in answer["text"]  # and why


async def test_history_reads_the_newest_attempts_off_an_index_on_both_databases(
    db: Database,
) -> None:
    # An audit trail is kept for years: the last 20 of it must not mean sorting all of it.
    noting = Noting(db)
    audit = AuditLog(noting, NumberHasher(b"k" * 16))  # type: ignore[arg-type]
    # /call history: everyone's, one person's, one number's; the Home tab: one person's in a team.
    asked = ((None, None, None), (None, "U0", None), (None, None, "h"), ("T0", "U0", None),
             ("T0", None, None))
    for team_id, user_id, number_hash in asked:
        await audit.history(team_id, user_id=user_id, number_hash=number_hash)
    assert len(noting.read) == 5  # the attempts (none, so no events)

    async def plans(conn: Connection) -> list[str]:
        if db.dialect == POSTGRESQL:
            # An empty table is read whole more cheaply: the plan for a long one is wanted.
            await conn.execute("SET LOCAL enable_seqscan = off")
            explain = "EXPLAIN"
        else:
            explain = "EXPLAIN QUERY PLAN"
        return [" | ".join(str(row[-1]) for row in await conn.fetchall(f"{explain} {sql}", params))
                for sql, params in noting.read]

    for plan in await db.atomic(plans):
        assert "Index Scan Backward" in plan or "USING INDEX" in plan, plan
        assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


async def test_a_call_with_a_very_long_flow_name_keeps_its_outcome_in_the_history(
    bot_factory: BotFactory, evo: EvoVoiceStandIn,
) -> None:
    # Evo Voice's flow names are the account's to choose: one of 3,000 characters made the
    # history line longer than a section takes, and the clip cut off how the call went.
    evo.flows.append({"id": "flow-long", "name": "Failover " * 340, "accountId": "acct-1"})
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} flow-long")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    answer = await history(bot)
    [line] = lines(answer)
    assert "❌ not answered, Completed, 5 s" in line
    assert "❌ not answered, Completed, 5 s" in answer["blocks"][1]["text"]["text"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_history_asked_while_the_database_does_not_answer_says_so_in_words(
    bot_factory: BotFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The history is read from the database: asked while it doesn't answer, the person is told
    so and to try again (as every request is), not left with no answer at all."""
    bot = await bot_factory("http", DATABASE_URL=with_short_lock_timeout(database_url))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    async with tables_locked(database_url, "audit_attempts", reads_too=True):
        answer = await history(bot)
    assert "callbot could not read its database" in answer["text"], answer
    assert "(reference " in answer["text"]
    assert not [r for r in caplog.records if "failed" in r.getMessage()
                and "background task" in r.getMessage()]
    assert len(lines(await history(bot))) == 1  # once it answers, the history is as ever
