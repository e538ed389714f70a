"""Phone numbers: parse, normalise and classify them, and apply the dialling policy.

Pure functions, no I/O. Every number a user types is hostile until proven otherwise: a wrong
call costs money (toll fraud) or wakes the wrong person. So the rules here refuse rather than
repair, and the only string ever handed to the dialler is the E.164 form produced by
``phonenumbers.format_number(..., E164)`` in :func:`check_dialable`.

Errors (the whole tree is drawn in bot/errors.py)::

    CallbotError
     └── NumberRejected        .code: RejectCode, .reason: plain words for the user
                               (never echoes the raw input; shows the masked number or nothing)

``DialPolicy`` raises ``ValueError`` when it is built from a bad configuration, so that a typo
in the policy file stops the bot at start-up instead of at the first call.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult

from bot.errors import CallbotError

__all__ = [
    "DEFAULT_ALLOWED_TYPES",
    "FORMAT_HINT",
    "MAX_NUMBER_CHARS",
    "NUMBER_TYPE_NAMES",
    "DialPolicy",
    "DialableNumber",
    "NumberRejected",
    "RejectCode",
    "check_dialable",
    "describe_region",
    "mask",
    "parse_number",
    "to_e164",
]

MAX_NUMBER_CHARS = 32
MIN_DIGITS = 3
FORMAT_HINT = "+18144043093 or (814) 404-3093"
MASK = "•••"

# phonenumbers exposes the types as plain ints; the policy and DialableNumber use their names.
NUMBER_TYPE_NAMES: dict[int, str] = {
    PhoneNumberType.FIXED_LINE: "FIXED_LINE",
    PhoneNumberType.MOBILE: "MOBILE",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "FIXED_LINE_OR_MOBILE",
    PhoneNumberType.TOLL_FREE: "TOLL_FREE",
    PhoneNumberType.PREMIUM_RATE: "PREMIUM_RATE",
    PhoneNumberType.SHARED_COST: "SHARED_COST",
    PhoneNumberType.VOIP: "VOIP",
    PhoneNumberType.PERSONAL_NUMBER: "PERSONAL_NUMBER",
    PhoneNumberType.PAGER: "PAGER",
    PhoneNumberType.UAN: "UAN",
    PhoneNumberType.VOICEMAIL: "VOICEMAIL",
    PhoneNumberType.UNKNOWN: "UNKNOWN",
}

DEFAULT_ALLOWED_TYPES: frozenset[str] = frozenset({"FIXED_LINE", "MOBILE", "FIXED_LINE_OR_MOBILE"})

_TYPE_WORDS: dict[str, str] = {
    "FIXED_LINE": "landline",
    "MOBILE": "mobile",
    "FIXED_LINE_OR_MOBILE": "landline or mobile",
    "TOLL_FREE": "toll-free",
    "PREMIUM_RATE": "premium-rate",
    "SHARED_COST": "shared-cost",
    "VOIP": "VoIP",
    "PERSONAL_NUMBER": "personal",
    "PAGER": "pager",
    "UAN": "UAN",
    "VOICEMAIL": "voicemail",
    "UNKNOWN": "unknown type",
}

_REGION_NAMES: dict[str, str] = {
    "US": "the United States",
    "CA": "Canada",
    "PR": "Puerto Rico",
    "VI": "the US Virgin Islands",
    "GU": "Guam",
    "AS": "American Samoa",
    "MP": "the Northern Mariana Islands",
    "DO": "the Dominican Republic",
    "JM": "Jamaica",
    "BS": "the Bahamas",
    "BB": "Barbados",
    "BM": "Bermuda",
    "KY": "the Cayman Islands",
    "TT": "Trinidad and Tobago",
    "AG": "Antigua and Barbuda",
    "AI": "Anguilla",
    "DM": "Dominica",
    "GD": "Grenada",
    "KN": "Saint Kitts and Nevis",
    "LC": "Saint Lucia",
    "VC": "Saint Vincent and the Grenadines",
    "VG": "the British Virgin Islands",
    "TC": "the Turks and Caicos Islands",
    "MS": "Montserrat",
    "SX": "Sint Maarten",
    "MX": "Mexico",
    "GB": "the United Kingdom",
    "IE": "Ireland",
    "FR": "France",
    "DE": "Germany",
    "ES": "Spain",
    "IT": "Italy",
    "VA": "Vatican City",
    "NL": "the Netherlands",
    "BE": "Belgium",
    "CH": "Switzerland",
    "SE": "Sweden",
    "NO": "Norway",
    "DK": "Denmark",
    "FI": "Finland",
    "PL": "Poland",
    "PT": "Portugal",
    "AU": "Australia",
    "NZ": "New Zealand",
    "IN": "India",
    "JP": "Japan",
    "CN": "China",
    "PH": "the Philippines",
    "BR": "Brazil",
    "AR": "Argentina",
    "IL": "Israel",
    "AE": "the United Arab Emirates",
    "ZA": "South Africa",
    "001": "no country (an international non-geographic number)",
}

_DIGITS = frozenset("0123456789")
_NUMBER_CHARS = _DIGITS | frozenset(" -.()")  # plus one leading "+"
_ASCII_WHITESPACE = " \t\r\n\f\v"
# A trailing extension in any of the forms phonenumbers understands and E.164 would silently drop.
_EXTENSION_SUFFIX = re.compile(
    r"(?:;\s*ext\s*=|ext(?:ension)?\.?|x|\#)\s*[0-9]{1,10}\s*\#?\Z",
    re.IGNORECASE | re.ASCII,
)
_E164_PREFIX = re.compile(r"\+[0-9]{1,15}")
_E164_SHAPE = re.compile(r"\+([1-9][0-9]{1,14})\Z")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class RejectCode(enum.StrEnum):
    EMPTY = "empty"
    BAD_CHARACTERS = "bad_characters"
    EXTENSION = "extension"
    TOO_LONG = "too_long"
    NOT_A_NUMBER = "not_a_number"
    INVALID = "invalid"
    NON_GEOGRAPHIC = "non_geographic"
    REGION_NOT_ALLOWED = "region_not_allowed"
    TYPE_NOT_ALLOWED = "type_not_allowed"
    BLOCKED_PREFIX = "blocked_prefix"


class NumberRejected(CallbotError):
    """A number that must not be dialled (or used as a caller ID), and why, in plain words."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"NumberRejected({self.code!s}, {self.reason!r})"


@dataclass(frozen=True)
class DialPolicy:
    """Which numbers may be dialled. Validated on construction (raises ``ValueError``)."""

    default_region: str = "US"
    allowed_regions: frozenset[str] = frozenset({"US"})
    allowed_types: frozenset[str] = DEFAULT_ALLOWED_TYPES
    blocked_prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Configuration loaders hand in lists and sets; keep the instance hashable and immutable.
        object.__setattr__(self, "allowed_regions", frozenset(self.allowed_regions))
        object.__setattr__(self, "allowed_types", frozenset(self.allowed_types))
        object.__setattr__(self, "blocked_prefixes", _as_tuple(self.blocked_prefixes))

        supported = phonenumbers.SUPPORTED_REGIONS
        if self.default_region not in supported:
            raise ValueError(f"default_region {self.default_region!r} is not a known region code")
        if not self.allowed_regions:
            raise ValueError("allowed_regions is empty: no number could ever be dialled")
        unknown_regions = sorted(r for r in self.allowed_regions if r not in supported)
        if unknown_regions:
            raise ValueError(f"allowed_regions has unknown region codes: {unknown_regions}")
        if not self.allowed_types:
            raise ValueError("allowed_types is empty: no number could ever be dialled")
        unknown_types = sorted(t for t in self.allowed_types if t not in _TYPE_WORDS)
        if unknown_types:
            raise ValueError(
                f"allowed_types has unknown names: {unknown_types}; "
                f"expected some of {sorted(_TYPE_WORDS)}"
            )
        bad_prefixes = [p for p in self.blocked_prefixes if not _E164_PREFIX.fullmatch(p)]
        if bad_prefixes:
            raise ValueError(
                f"blocked_prefixes must look like '+1900' (a + and 1-15 digits): {bad_prefixes}"
            )


def _as_tuple(items: Iterable[str]) -> tuple[str, ...]:
    if isinstance(items, str):
        # A lone string would otherwise become a tuple of its characters, blocking "+" and "1".
        return (items,)
    return tuple(items)


@dataclass(frozen=True)
class DialableNumber:
    """A number that passed the policy. ``e164`` is the only thing ever sent to the dialler."""

    e164: str
    region: str
    type: str

    @property
    def masked(self) -> str:
        return mask(self.e164)


def parse_number(text: str, default_region: str) -> phonenumbers.PhoneNumber:
    """Parse ``text`` strictly; national formats are read in ``default_region``.

    Raises NumberRejected (EMPTY, TOO_LONG, EXTENSION, BAD_CHARACTERS, NOT_A_NUMBER). The result is
    not yet checked for validity or policy: see :func:`check_dialable`.
    """
    text = text.strip(_ASCII_WHITESPACE)
    if not text:
        raise NumberRejected(
            RejectCode.EMPTY, f"No phone number was given. Type one like {FORMAT_HINT}."
        )
    if len(text) > MAX_NUMBER_CHARS:
        raise NumberRejected(
            RejectCode.TOO_LONG,
            f"That is too long to be a phone number (at most {MAX_NUMBER_CHARS} characters). "
            f"Type just the number, like {FORMAT_HINT}.",
        )
    extension = _EXTENSION_SUFFIX.search(text)
    if extension is not None and _is_plain_number(text[: extension.start()]):
        raise NumberRejected(
            RejectCode.EXTENSION,
            "Extensions can't be dialled; call the main number without the extension "
            "and ask to be put through once connected.",
        )
    bad = _describe_bad_characters(text)
    if bad is not None:
        raise NumberRejected(
            RejectCode.BAD_CHARACTERS,
            f"The number contains {bad}. Use only the digits 0-9, a leading +, spaces and "
            f"- . ( ), like {FORMAT_HINT}.",
        )
    if sum(ch in _DIGITS for ch in text) < MIN_DIGITS:
        raise NumberRejected(
            RejectCode.NOT_A_NUMBER,
            f"That doesn't look like a phone number. Type it like {FORMAT_HINT}.",
        )
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        raise NumberRejected(RejectCode.NOT_A_NUMBER, _parse_error_reason(exc)) from None
    if number.extension:
        # Unreachable with the character rules above; kept so a phonenumbers change can't let an
        # extension through to be silently dropped by E.164 formatting.
        raise NumberRejected(
            RejectCode.EXTENSION,
            "Extensions can't be dialled; call the main number without the extension.",
        )
    return number


def check_dialable(text: str, policy: DialPolicy) -> DialableNumber:
    """Parse ``text`` and apply ``policy``. Returns the number to dial or raises NumberRejected."""
    number = parse_number(text, policy.default_region)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    masked = mask(e164)
    allowed_regions = _list_regions(policy)

    if not _E164_SHAPE.match(e164):
        # phonenumbers calls some over-long national numbers valid (+49 201 00000000000); E.164
        # allows at most 15 digits, and the voice API takes nothing else.
        raise NumberRejected(
            RejectCode.INVALID,
            f"{masked} has more digits than a phone number can (at most 15 with the country "
            f"code). Check the digits, like {FORMAT_HINT}.",
        )
    if not phonenumbers.is_valid_number(number):
        raise NumberRejected(
            RejectCode.INVALID,
            f"{masked} isn't a valid phone number ({_invalid_detail(number)}). "
            f"Check the digits and the country code, like {FORMAT_HINT}.",
        )
    region = phonenumbers.region_code_for_number(number)
    if region is None or region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        raise NumberRejected(
            RejectCode.NON_GEOGRAPHIC,
            f"{masked} is an international non-geographic number (not in any country), "
            f"so it can't be called. Call a regular number in {allowed_regions} instead.",
        )
    if region not in policy.allowed_regions:
        raise NumberRejected(
            RejectCode.REGION_NOT_ALLOWED,
            f"{masked} is in {describe_region(region)}; calls may only go to {allowed_regions}. "
            "Ask an admin if calls there should be allowed.",
        )
    type_name = NUMBER_TYPE_NAMES.get(phonenumbers.number_type(number), "UNKNOWN")
    if type_name not in policy.allowed_types:
        raise NumberRejected(
            RejectCode.TYPE_NOT_ALLOWED,
            f"{masked} is {_kind_of_number(type_name)}; only {_list_types(policy)} numbers "
            "can be called. Call a regular number instead.",
        )
    if any(e164.startswith(prefix) for prefix in policy.blocked_prefixes):
        raise NumberRejected(
            RejectCode.BLOCKED_PREFIX,
            f"{masked} is in a number range this bot may not call. "
            "Ask an admin if you think it should be allowed.",
        )
    return DialableNumber(e164=e164, region=region, type=type_name)


def to_e164(text: str, default_region: str) -> str:
    """Normalise a caller ID to E.164.

    Strict parse, then only ``is_possible_number`` is required: caller IDs such as the fictional
    555-01xx range may not be "valid" in the metadata. A local-only number (no area code) is
    refused, because its E.164 form would be a different, wrong number.
    """
    number = parse_number(text, default_region)
    reason = phonenumbers.is_possible_number_with_reason(number)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if reason != ValidationResult.IS_POSSIBLE:
        raise NumberRejected(
            RejectCode.INVALID,
            f"{mask(e164)} can't be a phone number ({_possible_detail(reason)}). "
            f"Type it with its area code, like {FORMAT_HINT}.",
        )
    return e164


def mask(e164: str) -> str:
    """Show enough of a number to recognise it, never all of it. Never raises.

    ``"+18144043093"`` -> ``"+1 814 ••• 3093"``; national numbers shorter than 9 digits show only
    the last 2 (``"+247 •••89"``); anything that isn't E.164 shows at most its last 2 digits.
    """
    if not isinstance(e164, str):
        return MASK
    match = _E164_SHAPE.match(e164)
    if match is not None:
        digits = match.group(1)
        for cc_len in (1, 2, 3):
            if int(digits[:cc_len]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                cc, national = digits[:cc_len], digits[cc_len:]
                if len(national) >= 9:
                    return f"+{cc} {national[:3]} {MASK} {national[-4:]}"
                if len(national) >= 4:
                    return f"+{cc} {MASK}{national[-2:]}"
                return f"+{cc} {MASK}"
    digits = "".join(ch for ch in e164 if ch in _DIGITS)
    return f"{MASK}{digits[-2:]}" if len(digits) >= 6 else MASK


def describe_region(region: str) -> str:
    """``"DO"`` -> ``"the Dominican Republic (DO)"``; unknown codes come back as they are."""
    name = _REGION_NAMES.get(region.upper())
    return f"{name} ({region.upper()})" if name else region


def _is_plain_number(text: str) -> bool:
    body = text.removeprefix("+")
    return any(ch in _DIGITS for ch in body) and all(ch in _NUMBER_CHARS for ch in body)


def _describe_bad_characters(text: str) -> str | None:
    """Name, without echoing them, the worst kind of character in ``text`` that is not allowed."""
    found: list[str] = []
    for index, ch in enumerate(text):
        if ch in _NUMBER_CHARS or (ch == "+" and index == 0):
            continue
        category = unicodedata.category(ch)
        if category in _INVISIBLE_CATEGORIES or (ch.isspace() and ch != " "):
            return "invisible or control characters (tabs, line breaks or direction marks)"
        if ch == "+":
            found.append("a + that isn't at the start")
        elif category.startswith("N"):
            found.append("digits other than plain 0-9")
        elif unicodedata.normalize("NFKC", ch) == "+":
            found.append("a look-alike plus sign")
        elif category.startswith("L"):
            found.append("letters (type vanity numbers as digits)")
        else:
            found.append("symbols such as * # , ; or /")
    return found[0] if found else None


def _parse_error_reason(exc: NumberParseException) -> str:
    if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        detail = "its country code isn't recognised; start with + and the country code"
    elif exc.error_type == NumberParseException.TOO_LONG:
        detail = "it has too many digits; type just one number"
    elif exc.error_type in (
        NumberParseException.TOO_SHORT_NSN,
        NumberParseException.TOO_SHORT_AFTER_IDD,
    ):
        detail = "it has too few digits; type the whole number"
    else:
        detail = "type it"
    return f"That doesn't look like a phone number: {detail}, like {FORMAT_HINT}."


def _possible_detail(reason: int) -> str:
    return {
        ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "the area code is missing",
        ValidationResult.INVALID_COUNTRY_CODE: "the country code isn't recognised",
        ValidationResult.TOO_SHORT: "too few digits",
        ValidationResult.TOO_LONG: "too many digits",
        ValidationResult.INVALID_LENGTH: "wrong number of digits",
    }.get(reason, "wrong number of digits")


def _invalid_detail(number: phonenumbers.PhoneNumber) -> str:
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == ValidationResult.IS_POSSIBLE:
        return "no such area code or number range is in use"
    return _possible_detail(reason)


def _kind_of_number(type_name: str) -> str:
    if type_name not in _TYPE_WORDS or type_name == "UNKNOWN":
        return "a number of unknown type"
    return f"a {_TYPE_WORDS[type_name]} number"


def _list_types(policy: DialPolicy) -> str:
    names = set(policy.allowed_types)
    if {"FIXED_LINE", "MOBILE"} <= names:
        # "landline, mobile, landline or mobile" says the same thing twice.
        names.discard("FIXED_LINE_OR_MOBILE")
    words = sorted(_TYPE_WORDS[name] for name in names)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _list_regions(policy: DialPolicy) -> str:
    regions = sorted(policy.allowed_regions, key=lambda r: (r != policy.default_region, r))
    return ", ".join(regions)
