"""The Evo Voice client's errors, and reading them from an answer.

Every failure reaches callers as one of these (never an ``httpx`` exception or a raw dict)::

    EvoVoiceError                   .message is safe to show to a user
    ├── EvoVoiceUnreachable         could not connect after retries: nothing was sent
    ├── OutcomeUnknown              POST /sessions/outgoing may have placed the call (.cause)
    │   └── ConflictPlacing         … answered 409: a conflict the service may raise after it
    │                               saved the session (.conflict)
    ├── EvoVoiceTimeout             a GET/DELETE was sent but no answer came back
    ├── MalformedResponse           a GET answered 2xx with a body of the wrong shape
    ├── AlreadyEnded                a hang-up refused (400, 409, 5xx) for a call that had ended:
    │                               the session, read right after, says so
    ├── StillGoingOn                a hang-up answered 404 for a call whose session, read right
    │                               after, says it goes on: nothing ended it
    └── EvoVoiceStatusError         the server answered with an error status
        ├── BadRequest              400 (.field_errors)
        ├── BadLogin                401, or /auth/status saying "not authenticated" (200 or 204),
        │                           and signing in with POST /auth/credentials refused too
        ├── Forbidden               403 for another reason than a role (e.g. a refused client)
        │   └── MissingRole         403 "Invalid Role" (.needed: the role(s) the operation needs)
        ├── NotFound                404
        ├── Conflict                409
        ├── RateLimited             429 (.retry_after seconds, or None)
        └── ServerError             5xx on anything but POST /sessions/outgoing
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from bot.masking import mask_numbers_in

# What decoding a JSON answer raises when it can't read it: ValueError for text that is no JSON,
# RecursionError for JSON nested deeper than the parser recurses (a malformed answer, too).
UNREADABLE_JSON = (ValueError, RecursionError)

# A Retry-After longer than this is read as this: one 429 asking for a day must not silence a
# followed call (or an escalation step) for a day.
MAX_RETRY_AFTER_SECONDS = 60.0


class EvoVoiceError(Exception):
    """Base of every error this client raises; ``message`` is safe to show to users."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EvoVoiceUnreachable(EvoVoiceError):
    """The connection could not be opened, even after retries: nothing was sent."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class OutcomeUnknown(EvoVoiceError):
    """POST /sessions/outgoing reached the server (maybe) but no clear answer came back.

    The call may have been placed: look it up with ``find_sessions`` instead of dialling again.
    """

    def __init__(self, message: str, *, cause: str, status: int | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.status = status


class ConflictPlacing(OutcomeUnknown):
    """409 to POST /sessions/outgoing. ServiceStack answers 409 for an optimistic-concurrency
    conflict on a save, which a service may meet after it created the session: nothing public
    says a call never rings after one (docs/evovoice-api.md, Errors), so it is no refusal that
    dialled nothing. ``conflict``: the answer read as any 409 is."""

    def __init__(self, message: str, *, conflict: EvoVoiceStatusError) -> None:
        super().__init__(message, cause="HTTP 409", status=409)
        self.conflict = conflict

    @property
    def said(self) -> str:
        """"HTTP 409: the server's words" (no full stop), or "HTTP 409" when it gave none."""
        return self.conflict.status_and_words.rstrip(".")


class EvoVoiceTimeout(EvoVoiceError):
    """A GET or DELETE was sent but its answer did not arrive (timed out or connection lost)."""


class MalformedResponse(EvoVoiceError):
    """A GET answered 2xx with a body that is not the expected JSON shape."""


def is_web_page(response: httpx.Response) -> bool:
    """An answer that is a page for people: a front end's maintenance page, a proxy's, or a web
    site's where the API was expected; never the API's own answer to a client asking for JSON."""
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().casefold()
    return kind in ("text/html", "application/xhtml+xml")


def unreadable_answer(response: httpx.Response) -> MalformedResponse:
    """A 2xx whose body is no JSON; one that is a page for people says so."""
    page = " (an HTML page, not JSON)" if is_web_page(response) else ""
    return MalformedResponse(f"Evo Voice sent an answer the bot could not read{page}.")


@dataclass(frozen=True)
class FieldError:
    """One entry of ServiceStack's ``responseStatus.errors``."""

    field_name: str | None
    message: str
    error_code: str | None = None


class AlreadyEnded(EvoVoiceError):
    """A hang-up the server refused, for a call that had already ended (its session says so):
    nothing rings, as with a 404. Nothing public says what Evo Voice answers to ending a session
    that has ended (docs/evovoice-api.md): this is how a refusal of it reads."""


class StillGoingOn(EvoVoiceError):
    """A hang-up answered 404 ("not found") for a call whose session, read right after, is listed
    as going on: nothing ended it, so it is no call that "ended on its own" (NotFound's reading)."""


class EvoVoiceStatusError(EvoVoiceError):
    """The server answered with a non-2xx status."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        field_errors: list[FieldError] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.field_errors: list[FieldError] = list(field_errors or [])
        # Only a 429 carries one (RateLimited); kept here so every status error is built alike.
        self.retry_after = retry_after
        # Whether `message` is the server's own words, not the status's default (status_error).
        self.server_said = True

    @property
    def status_and_words(self) -> str:
        """"HTTP 403: the server's words", or "HTTP 403" when it gave none (not the default's
        words again: "HTTP 403: Evo Voice refused the request (HTTP 403).")."""
        return f"HTTP {self.status}: {self.message}" if self.server_said else f"HTTP {self.status}"


class BadRequest(EvoVoiceStatusError):
    """400: the server rejected an argument (see ``field_errors``)."""


class BadLogin(EvoVoiceStatusError):
    """401: the bot's Evo Voice username or password is wrong."""


class Forbidden(EvoVoiceStatusError):
    """403 that is not "Invalid Role": the server refused the request for another reason."""


class MissingRole(Forbidden):
    """403 "Invalid Role": the bot's Evo Voice user lacks a role the operation needs."""

    needed: tuple[str, ...] = ("Manager", "SystemAdministrator")


class NotFound(EvoVoiceStatusError):
    """404."""


class Conflict(EvoVoiceStatusError):
    """409."""


class RateLimited(EvoVoiceStatusError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if it gave one."""


class ServerError(EvoVoiceStatusError):
    """5xx on a call that cannot have placed a phone call."""


def cannot_answer_now(exc: BaseException) -> bool:
    """Evo Voice failing in a way that says nothing of the set-up nor of the account having
    changed: out of reach, slow, 5xx, 429, or an answer that is not its API's (a maintenance page
    a front end serves with 200 while the vendor works). Start-up waits for it, and the cached
    flows and numbers are served meanwhile: one reading, so that neither exits nor refuses a call
    over what the other waits out."""
    return isinstance(exc, (EvoVoiceUnreachable, EvoVoiceTimeout, RateLimited, ServerError,
                            MalformedResponse))


_STATUS_ERRORS: dict[int, tuple[type[EvoVoiceStatusError], str]] = {
    400: (BadRequest, "Evo Voice rejected the request as invalid."),
    401: (BadLogin, "Evo Voice rejected the bot's login; check its username and password."),
    403: (Forbidden, "Evo Voice refused the request (HTTP 403)."),
    404: (NotFound, "Evo Voice could not find what was asked for."),
    409: (Conflict, "Evo Voice reported a conflict with the current state."),
    429: (RateLimited, "Evo Voice is receiving too many requests; try again shortly."),
}


def status_error_class(status: int) -> tuple[type[EvoVoiceStatusError], str]:
    """The error class for an HTTP error status, and its message when the server gave none."""
    return _STATUS_ERRORS.get(
        status,
        (ServerError, "Evo Voice had an internal problem; try again later.")
        if status >= 500
        else (EvoVoiceStatusError, f"Evo Voice answered with HTTP status {status}."),
    )


def is_invalid_role(*texts: str | None) -> bool:
    """ServiceStack's RequiredRole answers 403 "Invalid Role"; any other 403 is something else.
    ``texts``: the answer's message, error code and status line's reason."""
    return any("invalid role" in (text or "").casefold() for text in texts)


def camel_field(data: dict[str, Any], name: str) -> Any:
    """ServiceStack speaks camelCase unless configured otherwise: accept PascalCase too."""
    return data.get(name, data.get(name[:1].upper() + name[1:]))


def nonempty_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_response_status(
    response: httpx.Response,
) -> tuple[str | None, str | None, list[FieldError]]:
    try:
        data = response.json()
    except UNREADABLE_JSON:
        return None, None, []
    status = camel_field(data, "responseStatus") if isinstance(data, dict) else None
    if not isinstance(status, dict):
        return None, None, []
    errors = camel_field(status, "errors")
    field_errors = [
        FieldError(
            field_name=nonempty_text(camel_field(e, "fieldName")),
            message=nonempty_text(camel_field(e, "message")) or "",
            error_code=nonempty_text(camel_field(e, "errorCode")),
        )
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict)
    ]
    message, code = camel_field(status, "message"), camel_field(status, "errorCode")
    return nonempty_text(message), nonempty_text(code), field_errors


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):  # a field too large for a datetime
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def capped_retry_after(value: str | None) -> float | None:
    """``parse_retry_after``, but never more than ``MAX_RETRY_AFTER_SECONDS``."""
    seconds = parse_retry_after(value)
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_SECONDS)


# What an observer (the metrics) hears of a failed answer, by status.
_STATUS_KINDS = {400: "bad_request", 401: "bad_login", 403: "missing_role", 404: "not_found",
                 409: "conflict", 429: "rate_limited"}


def error_kind(response: httpx.Response) -> str | None:
    """What an observer hears of an answer: None for a 2xx, else the kind of error."""
    status = response.status_code
    if response.is_success:
        return None
    if status == 403 and not is_invalid_role(*parse_response_status(response)[:2],
                                             response.reason_phrase):
        # Turned away for another reason (a proxy, a refused agent): no role would help.
        return "forbidden"
    return _STATUS_KINDS.get(status, "server_error" if status >= 500 else "http_error")


_MAX_MESSAGE_CHARS = 300


def status_error(response: httpx.Response, password: str) -> EvoVoiceStatusError:
    """The error an answer with an error status stands for, its texts safe to show (``safe``)."""
    status = response.status_code
    error_class, default = status_error_class(status)
    server_message, error_code, field_errors = parse_response_status(response)
    if not server_message and field_errors:
        server_message = field_errors[0].message
    # ServiceStack's role attributes long said "Invalid Role" in the status line only, with no
    # body (StatusDescription, then EndRequest): read there, else it passes for "not a role".
    if status == 403 and is_invalid_role(server_message, error_code, response.reason_phrase):
        error_class = MissingRole
    message = safe(server_message, password) or default
    field_errors = [
        FieldError(e.field_name, safe(e.message, password), e.error_code) for e in field_errors
    ]
    retry_after = None
    if error_class is RateLimited:
        retry_after = capped_retry_after(response.headers.get("Retry-After"))
    error = error_class(status, message, error_code, field_errors, retry_after=retry_after)
    error.server_said = message != default
    return error


def safe(text: str | None, password: str) -> str:
    """Server text trimmed for users, with the bot's password blanked should it ever echo, and
    any phone number masked: a refusal may quote the number it refused ("'+18144043093' is an
    Invalid value for 'To'"), and it is shown in the channel and logged."""
    text = (text or "").strip()
    if password:
        text = text.replace(password, "***")
    text = mask_numbers_in(text)
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text
