"""What the Evo Voice API answers, as typed models (camelCase on the wire, ``extra`` ignored)."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Self

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from bot.evovoice.errors import (
    UNREADABLE_JSON, OutcomeUnknown, camel_field, is_web_page, nonempty_text, safe)

logger = logging.getLogger("bot.evovoice.client")

OUTGOING_PATH = "/sessions/outgoing"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_NUMBER_DECORATION = re.compile(r"[\s\-().]")
# A number as a URI (RFC 3966's tel:, or SIP's user part): a session's address may be written so.
_ADDRESS_SCHEME = re.compile(r"^(?:tel|sips?):", re.IGNORECASE)


# ServiceStack may send null for an empty list or a false flag.
_StrList = Annotated[list[str], BeforeValidator(lambda v: [] if v is None else v)]
_Flag = Annotated[bool, BeforeValidator(lambda v: False if v is None else v)]
# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069). In a name shown in Slack,
# one turns the rest of its line around: after a right-to-left override "3093" reads "3903". Words
# meant for people lose them; right-to-left scripts need none (their letters order themselves).
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
_Words = Annotated[str, BeforeValidator(
    lambda v: _BIDI_CONTROLS.sub("", v) if isinstance(v, str) else v)]


class _ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        coerce_numbers_to_str=True,
    )


class AuthStatus(_ApiModel):
    user_id: str | None = Field(default=None, alias="id")
    is_authenticated: _Flag = False
    roles: _StrList = Field(default_factory=list)
    account_ids: _StrList = Field(default_factory=list)
    account_names: _StrList = Field(default_factory=list)
    display_name: _Words | None = None


class Flow(_ApiModel):
    id: str
    name: _Words = ""
    description: _Words | None = None
    account_id: str | None = None


def as_e164(text: str | None) -> str | None:
    """``text`` as an E.164 number if it is one once spaces, dashes and brackets go; else None."""
    if not text:
        return None
    candidate = _NUMBER_DECORATION.sub("", text)
    return candidate if _E164.match(candidate) else None


def address_number(address: str | None) -> str | None:
    """The E.164 number an address names, read as ``is_address_of`` reads it; else None."""
    if not address:
        return None
    text = _ADDRESS_SCHEME.sub("", address.strip())
    # A tel: URI's parameters (";ext=12") are left on: a call to an extension is not this call.
    text = _NUMBER_DECORATION.sub("", text.split("@", 1)[0])
    return as_e164(text if text.startswith("+") else f"+{text}")


def is_address_of(address: str | None, e164: str) -> bool:
    """Whether a session's address names the number ``e164``.

    Nothing public says how ``toAddress`` writes it (docs/evovoice-api.md names the field only):
    as dialled (``+18144043093``), as a URI (``tel:+18144043093``, ``sip:+18144043093@host``), or
    without its plus (``18144043093``) all name it. The digits must be the number's own, country
    code included: a national form (``8144043093``) could be another country's number."""
    return address_number(address) == e164


class OwnedNumber(_ApiModel):
    id: str
    phone_number: str | None = None
    display_name: _Words | None = None
    account_id: str | None = None
    # The endpoint's field names as sent, for `callbot check` when no E.164 number is found.
    fields_seen: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _remember_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {**data, "fieldsSeen": tuple(str(key) for key in data)}
        return data

    @model_validator(mode="after")
    def _number_from_display_name(self) -> Self:
        # The E.164 is only *likely* in phoneNumber, written in a form nothing public gives: read
        # as a session's address is (`tel:+1814…`, `1814…`), so the policy's E.164 caller ID is
        # found among them, and Evo Voice is sent the E.164 it wants. The display name often
        # holds it instead.
        self.phone_number = address_number(self.phone_number) or as_e164(self.display_name)
        return self


class Session(_ApiModel):
    id: str
    date_created: str | None = None
    date_completed: str | None = None
    to_address: str | None = None
    from_address: str | None = None
    call_state: str | None = None
    dial_state: str | None = None
    ended: _Flag = False
    outcome: _Words | None = None
    answered_by_name: _Words | None = None
    channel: str | None = None

    @property
    def may_be_a_call(self) -> bool:
        """Whether this session may be a phone call: sessions are voice, chat or fax (`channel`),
        and an outgoing call is voice only. Without a channel, it can't be ruled out."""
        return not self.channel or self.channel.casefold() == "voice"


class CallPlaced(_ApiModel):
    """The server accepted a new outgoing call; its answer may or may not name the session."""

    session_id: str | None = None
    session: Session | None = None


def parse_call_placed(response: httpx.Response) -> CallPlaced:
    """Read whatever a 2xx to POST /sessions/outgoing carried; the call is accepted regardless,
    unless the answer carries a ServiceStack error (``responseStatus.errorCode``), or is a page
    for people (a front end's maintenance page, answered 200 on the service's behalf, which may
    never have run): then ``OutcomeUnknown``."""
    if is_web_page(response):
        logger.warning("Evo Voice POST %s: 2xx answered with a web page", OUTGOING_PATH)
        raise OutcomeUnknown(
            "Evo Voice answered with a web page, not the API's answer; the call may or may not "
            "have been placed.", cause="a web page in a 2xx answer", status=response.status_code,
        )
    if response.status_code == 204 or not response.content.strip():
        return CallPlaced()
    try:
        data = response.json()
    except UNREADABLE_JSON:
        logger.warning("Evo Voice POST %s: 2xx body is not JSON; call accepted", OUTGOING_PATH)
        return CallPlaced()
    if not isinstance(data, dict):
        return CallPlaced()
    status = camel_field(data, "responseStatus")
    if isinstance(status, dict) and nonempty_text(camel_field(status, "errorCode")):
        # A service that returns its error instead of throwing it answers 200 with the error
        # inside (ServiceStack's ResponseStatus): an error, yet after the request was acted on.
        logger.warning("Evo Voice POST %s: 2xx carrying an error (%s)", OUTGOING_PATH,
                       safe(camel_field(status, "errorCode"), ""))
        raise OutcomeUnknown(
            "Evo Voice reported an error while placing the call; it may or may not have been "
            "placed.", cause="an error inside a 2xx answer", status=response.status_code,
        )
    candidate = camel_field(data, "session")
    if not isinstance(candidate, dict):
        candidate = data
    try:
        session = Session.model_validate(candidate)
    except ValidationError:
        raw_id = camel_field(candidate, "sessionId") or camel_field(data, "sessionId")
        usable = isinstance(raw_id, (str, int)) and str(raw_id).strip()
        session_id = str(raw_id) if usable else None
        return CallPlaced(session_id=session_id)
    if not session.id.strip():
        # An empty id (a DTO's default) names no session, and no path reads one: look it up.
        return CallPlaced()
    return CallPlaced(session_id=session.id, session=session)
