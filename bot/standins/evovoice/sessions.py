"""Which sessions ``GET /sessions`` lists, and in what form: the stand-in's reading of the evidence.

- ``to`` is a *contains* filter; ``startDate`` is a date read in an unknown zone (``utc_offset``);
  so is ``endDate``, read inclusive or exclusive, and when absent no end or the startDate's day
  (``end_date``: END_DATE_READINGS);
  the zone of a session's dates is unknown too: ``without_zone`` writes them as naive local times;
  ``sortField``/``sortOrder`` may be ignored (``sort_honoured``): docs/evovoice-api.md.
- ``specificIds`` (*likely*: the vendor's CLI lists one session's log with it; several ids
  comma-separated as ServiceStack reads list parameters, *likely* too). What a server does with
  it is otherwise unknown, so ``specific_ids`` picks a reading: ``"honoured"`` (only those ids),
  ``"ignored"`` (the listing as if it were absent). ``omitted`` ids are left out of every listing
  even when asked for (a listing that misses some, for a reason nothing public explains).
- The *likely* quirk of the log: ``log`` is filled in a listing and empty in ``GET /sessions/{id}``.
- Ending a session that has ended: nothing public says what it answers (``ended_hang_up``).
- ``GET /sessions/{id}`` of a session it does not have (one it has forgotten): a ServiceStack
  service throws 404, or returns null, which ServiceStack answers 204 with no body; nothing
  public says which Evo Voice's does (``no_session``: NO_SESSION_READINGS).
- How a session's dates are written: nothing public says. ServiceStack writes ISO 8601 when so
  configured, else (its default) the WCF form ``/Date(1700000000000)/``, the milliseconds since
  the epoch in UTC, with the server's offset after them for a local time
  (``/Date(1700000000000-0500)/``): ``without_zone``'s ``form`` (DATES_FORMS).
- How a session's ``toAddress`` writes the number dialled: nothing public says (the evidence
  names the field only; sessions are voice, chat or fax, whose addresses are not all numbers).
  ``written_address`` writes it each plausible way; ``written_number`` writes an owned number's
  ``phoneNumber`` so too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bot.standins.evovoice.behaviours import error
from bot.standins.evovoice.listing import in_accounts

SPECIFIC_IDS_READINGS = ("honoured", "ignored")
# What ``endDate`` means (its semantics are unconfirmed: docs/evovoice-api.md), each plausible way:
# "inclusive" (sessions of that day and before; absent, no end), "exclusive" (before that day;
# absent, no end), "one_day" (inclusive; absent, the startDate's day: one day only, as a
# ServiceStack filter that defaults EndDate to StartDate lists).
END_DATE_READINGS = ("inclusive", "exclusive", "one_day")
# What ending a session that has ended answers, each plausible way: "ends_again" (ended anew, now,
# as hung up), "accepted" (204, left as it ended), "bad_request", "conflict", "not_found", or
# "server_error" (500: ServiceStack's answer to anything else, an exception thrown by the service).
ENDED_HANG_UP_READINGS = (
    "ends_again", "accepted", "bad_request", "conflict", "not_found", "server_error"
)
_ENDED_HANG_UP_REFUSALS = {"bad_request": (400, "ArgumentException"),
                           "conflict": (409, "Conflict"), "not_found": (404, "NotFound"),
                           "server_error": (500, "InvalidOperationException")}


# How a placed call's `toAddress` writes its number: "e164" as dialled (+18144043093), "tel" as a
# tel: URI (tel:+18144043093), "digits" without the plus (18144043093).
TO_ADDRESS_FORMS = ("e164", "tel", "digits")


def written_address(e164: str, form: str) -> str:
    """`e164` as a session's `toAddress` written in `form` (TO_ADDRESS_FORMS)."""
    if form not in TO_ADDRESS_FORMS:
        raise ValueError(f"to_address_form must be one of {TO_ADDRESS_FORMS}")
    return {"e164": e164, "tel": f"tel:{e164}", "digits": e164.lstrip("+")}[form]


def written_number(endpoint: dict[str, Any], form: str) -> dict[str, Any]:
    """An owned number's endpoint as ``GET /endpoints`` writes it: its E.164 ``phoneNumber`` in
    ``form`` (TO_ADDRESS_FORMS). That the field holds the E.164 is only likely
    (docs/evovoice-api.md), and its form as unknown as ``toAddress``'s."""
    number = endpoint.get("phoneNumber")
    if form == "e164" or not isinstance(number, str):
        return endpoint
    return endpoint | {"phoneNumber": written_address(number, form)}


# What GET /sessions/{id} answers for a session the server does not have: "not_found" (404, a
# ServiceStack error body), or "no_content" (204: the service returned null).
NO_SESSION_READINGS = ("not_found", "no_content")


def no_session(reading: str) -> web.Response:
    """The answer to reading a session the server does not have (NO_SESSION_READINGS)."""
    if reading not in NO_SESSION_READINGS:
        raise ValueError(f"missing_session must be one of {NO_SESSION_READINGS}")
    if reading == "no_content":
        return web.Response(status=204)
    return error(404, "NotFound", "Session not found")


def ended_hang_up(session: Mapping[str, Any], reading: str) -> web.Response | None:
    """The answer to ending `session` if it has ended; None: it is ended (anew)."""
    if not session.get("ended") or reading == "ends_again":
        return None
    if refusal := _ENDED_HANG_UP_REFUSALS.get(reading):
        return error(*refusal, "Session has already ended")
    return web.Response(status=204)


def local_date(stamp: Any, utc_offset: timedelta) -> str:
    try:
        created = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return ""
    return (created.astimezone(UTC) + utc_offset).date().isoformat()


def unreadable_dates(query: Mapping[str, str]) -> str | None:
    """The first of ``startDate``/``endDate`` that is no date (ServiceStack can't bind it: 400).

    They are "YYYY-MM-DD" (docs/evovoice-api.md); a date and time is read as well, as ServiceStack
    reads a DateTime."""
    for name in ("startDate", "endDate"):
        if name in query:
            try:
                datetime.fromisoformat(query[name].replace("Z", "+00:00"))
            except ValueError:
                return name
    return None


def sort_refusal(sort_field: str) -> web.Response:
    """ServiceStack's 400 for a ``sortField`` it can't bind: its values are undocumented, so a
    server may know none that a client sends (``sort_refused``)."""
    return error(400, "RequestBindingException", "Unable to bind to request 'ListSessions'",
                 [{"errorCode": "SerializationException", "fieldName": "SortField",
                   "message": f"'{sort_field}' is not a valid value"}])


def listed_sessions(
    sessions: Mapping[str, dict[str, Any]],
    query: Mapping[str, str],
    *,
    utc_offset: timedelta,
    sort_honoured: bool,
    specific_ids: str,
    omitted: Collection[str],
    dates_offset: timedelta | None = None,
    dates_form: str = "iso",
    end_date: str = "inclusive",
) -> list[dict[str, Any]]:
    """The sessions a listing with ``query`` holds, in its order, in the listing's form."""
    if specific_ids not in SPECIFIC_IDS_READINGS:
        raise ValueError(f"specific_ids must be one of {SPECIFIC_IDS_READINGS}")
    if end_date not in END_DATE_READINGS:
        raise ValueError(f"end_date must be one of {END_DATE_READINGS}")
    to, start = query.get("to"), query.get("startDate")
    end = query.get("endDate", start if end_date == "one_day" else None)
    wanted = None
    if specific_ids == "honoured" and "specificIds" in query:
        wanted = {i for i in query["specificIds"].split(",") if i}
    order = {sid: i for i, sid in enumerate(sessions)}
    found = sorted(
        (
            s
            for s in sessions.values()
            if in_accounts(s, query)
            and s["id"] not in omitted
            and (wanted is None or s["id"] in wanted)
            and (to is None or to in str(s.get("toAddress") or ""))
            and (start is None or local_date(s.get("dateCreated"), utc_offset) >= start)
            and (end is None or _before_end(local_date(s.get("dateCreated"), utc_offset),
                                            end[:10], end_date))
        ),
        key=lambda s: (str(s.get("dateCreated", "")), order[s["id"]]),
        reverse=sort_honoured and query.get("sortOrder") == "Descend",
    )
    return [without_zone(as_listed(s), dates_offset, dates_form) for s in found]


def _before_end(day: str, end: str, reading: str) -> bool:
    return day < end if reading == "exclusive" else day <= end


# How a session's dates are written: "iso" (ISO 8601) or "wcf" (ServiceStack's default,
# `/Date(ms)/`, or `/Date(ms-0500)/` for a local time), or "wcf_unspecified": ServiceStack's
# default for a DateTime of no kind (read from a column without a zone), `/Date(ms-0000)/`,
# whose milliseconds take its wall time for the server process's own (ServiceStack.Text's
# ToUnixTimeMs): naive times at `utc_offset` written by a process on UTC.
DATES_FORMS = ("iso", "wcf", "wcf_unspecified")


def without_zone(
    session: dict[str, Any], utc_offset: timedelta | None, form: str = "iso"
) -> dict[str, Any]:
    """`session` as a server on local time may write it: its dates naive local times at
    ``utc_offset`` (no zone named); None: as kept, in UTC with a ``Z``. ``form`` "wcf": each date
    as ``/Date(ms)/`` (the moment, in UTC), ``utc_offset`` after the milliseconds if given."""
    if form not in DATES_FORMS:
        raise ValueError(f"session_dates_form must be one of {DATES_FORMS}")
    if utc_offset is None and form == "iso":
        return session
    shown = dict(session)
    for name in ("dateCreated", "dateCompleted"):
        try:
            when = datetime.fromisoformat(str(session.get(name)).replace("Z", "+00:00"))
        except ValueError:
            continue
        if when.tzinfo is None or when.year <= 1970:  # a placeholder stays as it is
            continue
        if form == "wcf":
            shown[name] = _wcf_date(when, utc_offset)
        elif form == "wcf_unspecified":
            wall = when.astimezone(UTC) + (utc_offset or timedelta(0))
            shown[name] = f"/Date({round(wall.timestamp() * 1000)}-0000)/"
        else:
            local = when.astimezone(UTC) + (utc_offset or timedelta(0))
            shown[name] = local.replace(tzinfo=None).isoformat(timespec="milliseconds")
    return shown


def _wcf_date(when: datetime, utc_offset: timedelta | None) -> str:
    millis = round(when.timestamp() * 1000)
    if utc_offset is None:
        return f"/Date({millis})/"
    minutes = int(utc_offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"/Date({millis}{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d})/"


def as_listed(session: dict[str, Any]) -> dict[str, Any]:
    return session | {"log": [{"type": "Info", "message": f"Session {session['id']} created"}]}


def as_read_alone(
    session: dict[str, Any], dates_offset: timedelta | None = None, dates_form: str = "iso"
) -> dict[str, Any]:
    """``GET /sessions/{id}``: the same session with its ``log`` empty."""
    return without_zone(session | {"log": []}, dates_offset, dates_form)
