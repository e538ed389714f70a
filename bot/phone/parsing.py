"""Reading a number someone typed: strict parsing, E.164, masking, and the refusal that says why."""

from __future__ import annotations

import enum
import re
import unicodedata

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from bot.errors import CallbotError
from bot.masking import E164_SHAPE, mask

MAX_NUMBER_CHARS = 32
MIN_DIGITS = 3
FORMAT_HINT = "+18144043093 or (814) 404-3093"

_DIGITS = frozenset("0123456789")
_NUMBER_CHARS = _DIGITS | frozenset(" -.()")  # plus one leading "+"
_ASCII_WHITESPACE = " \t\r\n\f\v"
# A trailing extension in any of the forms phonenumbers understands and E.164 would silently drop.
_EXTENSION_SUFFIX = re.compile(
    r"(?:;\s*ext\s*=|ext(?:ension)?\.?|x|\#)\s*[0-9]{1,10}\s*\#?\Z",
    re.IGNORECASE | re.ASCII,
)
# The full-width forms of ASCII (U+FF01-FF5E) and the ideographic space, as NFKC reads them:
# CJK input methods type "＋１８１４" for the very digits it shows. Only these are folded;
# superscript, circled or other scripts' digits read differently from what would be dialled,
# so the rules below still refuse them.
# No-break spaces (and the figure, thin and narrow ones some locales group digits with) are spaces:
# a number pasted from a web page or an e-mail holds them.
_FULL_WIDTH = str.maketrans({
    **{ch: unicodedata.normalize("NFKC", ch)
       for ch in (*map(chr, range(0xFF01, 0xFF5F)), "\u3000")},
    **dict.fromkeys("\u00a0\u2007\u2009\u202f", " "),
})
E164_PREFIX = re.compile(r"\+[0-9]{1,15}")
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


def parse_number(text: str, default_region: str) -> phonenumbers.PhoneNumber:
    """Parse ``text`` strictly, after :func:`fold_width`; national formats are read in
    ``default_region``.

    Raises NumberRejected (EMPTY, TOO_LONG, EXTENSION, BAD_CHARACTERS, NOT_A_NUMBER). The result is
    not yet checked for validity or policy: see :func:`check_dialable`.
    """
    text = fold_width(text).strip(_ASCII_WHITESPACE)
    if text[:4].lower() == "tel:":  # a tel: link (RFC 3966), copied from a page or an invite
        text = text[4:].strip(_ASCII_WHITESPACE)
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


def fold_width(text: str) -> str:
    """``text`` with full-width digits, signs and letters as their ASCII selves (``＋１８１４`` ->
    ``+1814``); every other character is left as it is, for the rules to judge."""
    return text.translate(_FULL_WIDTH)


def to_e164(text: str, default_region: str) -> str:
    """Normalise a caller ID to E.164.

    Strict parse, then only ``is_possible_number`` is required: caller IDs such as the fictional
    555-01xx range may not be "valid" in the metadata. A local-only number (no area code) is
    refused, because its E.164 form would be a different, wrong number.
    """
    number = parse_number(text, default_region)
    reason = phonenumbers.is_possible_number_with_reason(number)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if reason == ValidationResult.IS_POSSIBLE and not E164_SHAPE.match(e164):
        # Leading zeros are counted apart from the national number, so a run of them can pass
        # the length check and still make more than E.164's 15 digits ("00000000000000" in NG).
        reason = ValidationResult.TOO_LONG
    if reason != ValidationResult.IS_POSSIBLE:
        raise NumberRejected(
            RejectCode.INVALID,
            f"{mask(e164)} can't be a phone number ({possible_detail(reason)}). "
            f"Type it with its area code, like {FORMAT_HINT}.",
        )
    return e164


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


def possible_detail(reason: int) -> str:
    return {
        ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "the area code is missing",
        ValidationResult.INVALID_COUNTRY_CODE: "the country code isn't recognised",
        ValidationResult.TOO_SHORT: "too few digits",
        ValidationResult.TOO_LONG: "too many digits",
        ValidationResult.INVALID_LENGTH: "wrong number of digits",
    }.get(reason, "wrong number of digits")
