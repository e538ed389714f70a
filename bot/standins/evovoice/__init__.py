"""A loopback stand-in for the Evo Voice API (an aiohttp.web server on 127.0.0.1).

It speaks the parts of the real protocol the bot uses: HTTP Basic on every request or a session
from ``POST /auth/credentials``, ServiceStack error bodies, paged lists, and
``POST /sessions/outgoing`` with its undeclared response. Tests read what the bot sent from
``requests`` and script how the server misbehaves with *behaviours*::

    standin = EvoVoiceStandIn()
    await standin.start()
    standin.flows.append({"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"})
    standin.queue_outgoing(DropConnection(), Respond())   # first call: answer lost; second: fine
    ...                                                   # point EvoVoiceClient at standin.url
    assert len(standin.outgoing_posts) == 1
    await standin.stop()

Behaviours (consumed in order per ``(method, path)``; when the queue is empty, the route's entry in
``default_behaviours``, else ``Respond()``):

=====================  =========================================================  ============
behaviour              answer                                                     side effect*
=====================  =========================================================  ============
``Respond()``          what the route normally answers (outgoing: the session)    yes
``Answered(body)``     200 with ``body`` as JSON                                  yes
``EmptyObject()``      200 ``{}``                                                 yes
``NoContent()``        204, no body                                               yes
``MalformedJson()``    200 with a body that is not JSON                           yes
``DropConnection()``   closes the socket after reading the request, no answer     yes
``ErrorStatus(s, m)``  status ``s`` with a ServiceStack error body (message m)    no
``TooManyRequests()``  429 with a ``Retry-After`` header                          no
``HtmlPage(s)``        ``s`` (default 200), an HTML page (a maintenance page)      no
``Redirected(u, s)``   status ``s`` (default 307) with ``Location: u``            no
``Delayed(n, then)``   waits ``n`` seconds, then does ``then`` (default Respond)  as ``then``
``Gated(gate, then)``  waits until the test sets ``gate`` (an asyncio.Event)       as ``then``
``Acted(then)``        the side effect at once, then the answer of ``then``       yes
``Trickled(s)``        the normal answer, its body one byte every ``s`` seconds   yes
``Oversized(n, s)``    200 (or ``s``), a JSON body of ``n`` bytes, chunked        yes
                       (``encoding="gzip"``: compressed on the wire)
=====================  =========================================================  ============

\\* the route's side effect: POST /sessions/outgoing creates a session (so ``GET /sessions?to=``
finds it even when the answer was lost), DELETE /sessions/{id} ends the session. ``POST
/sessions/outgoing`` checks auth, role and the body *before* taking a behaviour from its queue, so
an invalid request gets its 400 and leaves the queue alone.

Routes: GET /auth/status, GET /flows, GET /endpoints?type=PhoneNumber, POST /sessions/outgoing,
GET /sessions, GET /sessions/{id}, DELETE /sessions/{id}, PATCH /sessions/{id}, and DELETE
/sessions, which deletes the account's sessions in bulk as the real one does. Anything else
answers 404 (and is still recorded, so a test can assert e.g. that ``POST /endpoints/phone-numbers``
was never sent).

It follows the evidence (docs/evovoice-api.md), not the bot's expectations:

- ``GET /auth/status`` has no ``[Authenticate]``: a wrong login gets 200 ``isAuthenticated:
  false`` (or, with ``refused_login="no_content"``, an empty 204), never 401. Every other route
  answers 401.
- Logging in: HTTP Basic, or ``POST /auth/credentials`` and its session cookies (both *likely*;
  the vendor's CLI uses only the second). ``basic_enabled = False`` is a server that doesn't read
  Basic; ``logins.expire()`` ends the sessions (auth.py).
- EndSession (``DELETE /sessions/{id}``) requires the role ``User``: a Manager-only login (the
  default ``roles``) gets 403 "Invalid Role" (in an error body; with ``role_refusal =
  "status_line"``, in the status line alone, as older ServiceStack answered). PatchSession
  (``PATCH /sessions/{id}`` with ``{"callState": "Disconnected"}``) requires authentication
  only; that it ends the call is only likely, so ``patch_ends_calls = False`` accepts it and
  lets the call go on (with ``patch_writes_fields``, storing the ``callState`` it was sent, as
  a patch of the session's record would). What ending a session that has ended answers is
  unknown: ``ended_hang_up`` gives each plausible answer (204 marking it hung up, 204 leaving
  it, 400, 409, 500, 404); ``missing_session`` what reading a session it does not have
  answers (404, or ``"no_content"``: 204, a ServiceStack service's null). ``refused_methods``
  (e.g. ``{"DELETE": 405}``) has a front end turn a method away on every path before the
  server sees it, as IIS's WebDAV module does to DELETE (405, or 501 on an older IIS);
  ServiceStack itself answers 405 to a service that throws NotSupportedException
  (``ErrorStatus(405)``).
- ``GET /sessions``: ``to`` is a *contains* filter; ``startDate`` is a date read in
  ``sessions_utc_offset`` (unknown: tests try several), and so is ``endDate``, which ``end_date``
  reads inclusive, exclusive, or (``"one_day"``) inclusive with an absent one meaning the
  startDate's day, one day only; the zone of a session's ``dateCreated``
  and ``dateCompleted`` is unknown too: ``session_dates_offset`` (a timedelta) writes them, in
  every answer, as naive local times at that offset, with no zone (None: UTC with a ``Z``);
  ``session_dates_form = "wcf"`` writes them as ServiceStack does by default, ``/Date(ms)/``
  (with ``session_dates_offset``, ``/Date(ms-0500)/``: the same moment, a local time's offset),
  and ``"wcf_unspecified"`` as it writes a time of no zone, ``/Date(ms-0000)/``, its
  milliseconds off by ``session_dates_offset`` (a process on UTC reading naive local times);
  ``to_address_form`` writes a placed call's ``toAddress`` as dialled, as a ``tel:`` URI or
  without its plus (its form is unknown: sessions.py), and ``phone_number_form`` an owned
  number's ``phoneNumber`` in ``GET /endpoints`` so (only likely the E.164);
  ``sort_honoured`` False ignores ``sortField`` (oldest first); ``sort_refused`` answers 400 to
  any ``sortField``, whose values are undocumented; lists default to ``countPerPage=25``.
  ``specificIds=a,b`` lists those sessions (``specific_ids="honoured"``) or is ignored
  (``"ignored"``); ids in ``omitted_from_listings`` are in no listing. A listing fills each
  session's ``log``; ``GET /sessions/{id}`` leaves it empty (the likely quirk). See sessions.py.
- Its clock: nothing says it agrees with the bot's host's. ``clock_offset`` sets it ahead
  (behind, negative): the sessions' dates and every answer's ``Date`` header are on it.
- Rate limits: nothing public says Evo Voice has one. ``rate_limit = RateLimit(n, seconds)``
  answers 429 past ``n`` requests a window, with ``Retry-After`` in seconds, as a date, or
  absent (rate.py).
- ``all=true`` on a list: ``all_reading`` says what it does, since nothing public does:
  ``"everything"`` (all items, no more pages), ``"every_page"`` (all items on every page, yet
  ``hasMorePages`` as if paged: what the issue feared), ``"ignored"`` (paging as usual).
- The server rejects clients that send a library's or curl's User-Agent (403, not a role).
- JSON only for a client that asks for it (``Accept: application/json`` or ``?format=json``),
  else an HTML page; a body is read as JSON only with ``Content-Type: application/json``.

The package: auth.py (who a request comes from), behaviours.py (how an answer misbehaves),
listing.py (paged lists, as ServiceStack pages them), sessions.py (what a session listing holds),
rate.py (a rate limit), server.py (the routes and the test-side helpers).
"""

from bot.standins.evovoice.behaviours import (
    Acted,
    Answered,
    Behaviour,
    Delayed,
    DropConnection,
    EmptyObject,
    ErrorStatus,
    Gated,
    HtmlPage,
    MalformedJson,
    NoContent,
    Oversized,
    Redirected,
    Respond,
    TooManyRequests,
    Trickled,
)
from bot.standins.evovoice.rate import RateLimit
from bot.standins.evovoice.recorded import OUTGOING_PATH, Recorded
from bot.standins.evovoice.server import MANAGER_ROLES, EvoVoiceStandIn

__all__ = [
    "MANAGER_ROLES",
    "OUTGOING_PATH",
    "Acted",
    "Answered",
    "Behaviour",
    "Delayed",
    "DropConnection",
    "EmptyObject",
    "ErrorStatus",
    "EvoVoiceStandIn",
    "Gated",
    "HtmlPage",
    "MalformedJson",
    "NoContent",
    "Oversized",
    "RateLimit",
    "Redirected",
    "Recorded",
    "Respond",
    "TooManyRequests",
    "Trickled",
]
