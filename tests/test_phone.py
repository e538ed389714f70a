"""bot.phone: strict parsing, the dialling policy, masking.

The numbers below were checked against phonenumbers' own metadata (example_number_for_type and
friends), so a metadata update that reclassifies one shows up here as a failing case.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat

from bot.phone import (
    DEFAULT_ALLOWED_TYPES,
    FORMAT_HINT,
    MAX_NUMBER_CHARS,
    NUMBER_TYPE_NAMES,
    DialableNumber,
    DialPolicy,
    NumberRejected,
    RejectCode,
    check_dialable,
    describe_region,
    mask,
    parse_number,
    to_e164,
)
from tests.strategies import DIALLING_PREFIXES, NANP_NUMBERS

US_ONLY = DialPolicy()
NANP = DialPolicy(allowed_regions=frozenset({"US", "CA"}))
UK = DialPolicy(default_region="GB", allowed_regions=frozenset({"GB"}))
GERMANY = DialPolicy(default_region="DE", allowed_regions=frozenset({"DE"}))
JAPAN = DialPolicy(default_region="JP", allowed_regions=frozenset({"JP"}))
BLOCKING = DialPolicy(blocked_prefixes=("+1814555", "+1212"))

PROPERTY_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def reason_of(check: Callable[[str, Any], object], text: str, how: Any) -> str:
    """The reason `check(text, how)` rejects `text` for; empty if it accepts it."""
    try:
        check(text, how)
    except NumberRejected as error:
        return error.reason
    return ""


def rejection(text: str, policy: DialPolicy = US_ONLY) -> NumberRejected:
    with pytest.raises(NumberRejected) as info:
        check_dialable(text, policy)
    return info.value


# --- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "policy", "e164", "region", "type_name"),
    [
        ("+18144043093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("+1 814 404 3093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("+1 (814) 404-3093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("  +18144043093  ", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        # National formats are read in the policy's default region.
        ("(814) 404-3093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("814.404.3093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("1-814-404-3093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("814 404 3093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("+1 814 555 0100", US_ONLY, "+18145550100", "US", "FIXED_LINE_OR_MOBILE"),
        ("+1 416 555 0123", NANP, "+14165550123", "CA", "FIXED_LINE_OR_MOBILE"),
        ("(416) 555-0123", NANP, "+14165550123", "CA", "FIXED_LINE_OR_MOBILE"),
        ("020 7946 0958", UK, "+442079460958", "GB", "FIXED_LINE"),
        ("07400 123456", UK, "+447400123456", "GB", "MOBILE"),
        ("+44 20 7946 0958", UK, "+442079460958", "GB", "FIXED_LINE"),
        # phonenumbers drops a national prefix written after the country code.
        ("+44 (0)20 7946 0958", UK, "+442079460958", "GB", "FIXED_LINE"),
        ("030 123456", GERMANY, "+4930123456", "DE", "FIXED_LINE"),
        ("+49 151 23456789", GERMANY, "+4915123456789", "DE", "MOBILE"),
        # Full-width forms, as CJK input methods type them, read as the ASCII they show.
        ("１８１４４０４３０９３", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("＋18144043093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("＋１（８１４）４０４－３０９３", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("０３　１２３４　５６７８", JAPAN, "+81312345678", "JP", "FIXED_LINE"),
        # Pasted from a web page or an e-mail: no-break spaces (and the narrow and thin ones
        # French and other locales group digits with) are spaces.
        ("+1\u00a0814\u00a0404\u00a03093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("+44\u202f20\u20097946\u20070958", UK, "+442079460958", "GB", "FIXED_LINE"),
        # A tel: link (RFC 3966), as copied from a web page, a calendar or an incident tool.
        ("tel:+18144043093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("TEL:+1-814-404-3093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
        ("tel:814-404-3093", US_ONLY, "+18144043093", "US", "FIXED_LINE_OR_MOBILE"),
    ],
)
def test_accepts(text: str, policy: DialPolicy, e164: str, region: str, type_name: str) -> None:
    assert check_dialable(text, policy) == DialableNumber(e164=e164, region=region, type=type_name)


def test_dialable_number_masks_itself() -> None:
    assert check_dialable("+18144043093", US_ONLY).masked == "+1 814 ••• 3093"


# --- refused -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "policy", "code"),
    [
        ("", US_ONLY, RejectCode.EMPTY),
        ("   ", US_ONLY, RejectCode.EMPTY),
        ("\n\t", US_ONLY, RejectCode.EMPTY),
        # Characters outside digits, one leading +, space - . ( )
        ("555-CALL", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("1-800-FLOWERS", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("+1814٣043093", US_ONLY, RejectCode.BAD_CHARACTERS),  # Arabic-Indic three
        # Digits that NFKC would make plain but that don't read as them: only full-width is folded.
        ("+1814404309³", US_ONLY, RejectCode.BAD_CHARACTERS),  # superscript three
        ("+1814404309③", US_ONLY, RejectCode.BAD_CHARACTERS),  # circled three
        ("+1814404309𝟑", US_ONLY, RejectCode.BAD_CHARACTERS),  # mathematical bold three
        ("+18144043093ｘ９", US_ONLY, RejectCode.EXTENSION),  # a full-width extension is one too
        ("+1814\u202e4043093", US_ONLY, RejectCode.BAD_CHARACTERS),  # right-to-left override
        ("+1814\u20664043093", US_ONLY, RejectCode.BAD_CHARACTERS),  # left-to-right isolate
        ("+1814\u200b4043093", US_ONLY, RejectCode.BAD_CHARACTERS),  # zero-width space
        ("+1814\ufeff4043093", US_ONLY, RejectCode.BAD_CHARACTERS),  # byte-order mark
        ("+1814\ud8004043093", US_ONLY, RejectCode.BAD_CHARACTERS),  # lone surrogate
        ("+1 814\t404 3093", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("+1 814\n404 3093", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("+1 814*404*3093", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("+18144043093,,12", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("+1 814/404/3093", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("*67 814 404 3093", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("tel:8144043093;phone-context=x", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("++18144043093", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("1+8144043093", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("+18144043093+", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("x9", US_ONLY, RejectCode.BAD_CHARACTERS),
        ("#12", US_ONLY, RejectCode.BAD_CHARACTERS),
        # Extensions: phonenumbers would keep them aside and E.164 would drop them silently.
        ("+18144043093x9", US_ONLY, RejectCode.EXTENSION),
        ("+1 814 404 3093 x9", US_ONLY, RejectCode.EXTENSION),
        ("(814) 404-3093 X 9", US_ONLY, RejectCode.EXTENSION),
        ("+1 814 404 3093 ext 12", US_ONLY, RejectCode.EXTENSION),
        ("+1 814 404 3093 ext. 12", US_ONLY, RejectCode.EXTENSION),
        ("+1 814 404 3093 EXT12", US_ONLY, RejectCode.EXTENSION),
        ("+1 814 404 3093 extension 12", US_ONLY, RejectCode.EXTENSION),
        ("+18144043093#12", US_ONLY, RejectCode.EXTENSION),
        ("+18144043093;ext=12", US_ONLY, RejectCode.EXTENSION),
        # Length
        ("1" * (MAX_NUMBER_CHARS + 1), US_ONLY, RejectCode.TOO_LONG),
        ("+1 (814) 404-3093 (814) 404-3093 0", US_ONLY, RejectCode.TOO_LONG),
        # Not a number at all
        ("12", US_ONLY, RejectCode.NOT_A_NUMBER),
        ("+1", US_ONLY, RejectCode.NOT_A_NUMBER),
        ("()-", US_ONLY, RejectCode.NOT_A_NUMBER),
        ("...", US_ONLY, RejectCode.NOT_A_NUMBER),
        ("+999 1234 5678", US_ONLY, RejectCode.NOT_A_NUMBER),  # no country +999
        ("+0018144043093", US_ONLY, RejectCode.NOT_A_NUMBER),
        ("814-404-3093 814-404-3094", US_ONLY, RejectCode.NOT_A_NUMBER),  # two numbers
        # Parsed, but not a valid number
        ("+1 200 404 3093", US_ONLY, RejectCode.INVALID),  # no area code 200
        ("+1 814 404 309", US_ONLY, RejectCode.INVALID),
        ("+1 814 404 30931", US_ONLY, RejectCode.INVALID),
        ("404-3093", US_ONLY, RejectCode.INVALID),  # local only: no area code
        ("+44 7700 900123", UK, RejectCode.INVALID),  # Ofcom's range for TV drama
        # International non-geographic (region "001")
        ("+800 1234 5678", US_ONLY, RejectCode.NON_GEOGRAPHIC),  # freephone
        ("+808 1234 5678", US_ONLY, RejectCode.NON_GEOGRAPHIC),  # shared cost
        ("+870 301 234 567", US_ONLY, RejectCode.NON_GEOGRAPHIC),  # Inmarsat
        ("+882 342 1234", US_ONLY, RejectCode.NON_GEOGRAPHIC),
        ("+979 1234 56789", US_ONLY, RejectCode.NON_GEOGRAPHIC),  # premium rate
        # Region decided by the number, never by the calling code
        ("+1 809 234 5678", NANP, RejectCode.REGION_NOT_ALLOWED),  # Dominican Republic
        ("+1 876 523 0123", NANP, RejectCode.REGION_NOT_ALLOWED),  # Jamaica
        ("+1 787 234 5678", US_ONLY, RejectCode.REGION_NOT_ALLOWED),  # Puerto Rico is "PR"
        ("+1 416 555 0123", US_ONLY, RejectCode.REGION_NOT_ALLOWED),  # Canada
        ("+44 20 7946 0958", US_ONLY, RejectCode.REGION_NOT_ALLOWED),
        ("011 44 20 7946 0958", US_ONLY, RejectCode.REGION_NOT_ALLOWED),  # US exit code
        (
            "+39 06 6982 1234",
            DialPolicy(allowed_regions=frozenset({"IT"})),
            RejectCode.REGION_NOT_ALLOWED,
        ),  # Rome's 06 698 range is Vatican City
        ("+1 814 404 3093", UK, RejectCode.REGION_NOT_ALLOWED),
        # Type
        ("+1 900 234 5678", US_ONLY, RejectCode.TYPE_NOT_ALLOWED),  # premium rate
        ("+1 800 234 5678", US_ONLY, RejectCode.TYPE_NOT_ALLOWED),  # toll free
        ("(800) 234-5678", US_ONLY, RejectCode.TYPE_NOT_ALLOWED),
        ("+1 500 234 5678", US_ONLY, RejectCode.TYPE_NOT_ALLOWED),  # personal
        ("+1 600 201 2345", NANP, RejectCode.TYPE_NOT_ALLOWED),  # Canadian VoIP
        ("+1 310 1234", NANP, RejectCode.TYPE_NOT_ALLOWED),  # Canadian UAN
        ("+44 7640 123456", UK, RejectCode.TYPE_NOT_ALLOWED),  # pager
        ("+44 56 1234 5678", UK, RejectCode.TYPE_NOT_ALLOWED),  # VoIP
        ("+44 70 1234 5678", UK, RejectCode.TYPE_NOT_ALLOWED),  # personal
        ("+49 180 12345", GERMANY, RejectCode.TYPE_NOT_ALLOWED),  # shared cost
        ("+49 177 991234567", GERMANY, RejectCode.TYPE_NOT_ALLOWED),  # voicemail
        # Blocked prefix
        ("+1 814 555 0100", BLOCKING, RejectCode.BLOCKED_PREFIX),
        ("(212) 555-0123", BLOCKING, RejectCode.BLOCKED_PREFIX),
    ],
)
def test_refuses(text: str, policy: DialPolicy, code: RejectCode) -> None:
    error = rejection(text, policy)
    assert error.code is code
    assert error.reason == str(error)
    assert_safe_reason(error.reason, text)


def assert_safe_reason(
    reason: str, text: str, reason_for: Callable[[str], str] | None = None
) -> None:
    """A reason is plain ASCII words plus the mask dots, and never repeats what was typed.

    `reason_for(text)` gives the reason for another text: typed words that the reason's own
    wording uses ("number") are told from an echo by typing them in the other case."""
    assert reason
    assert all(ch.isascii() or ch == "•" for ch in reason), reason
    assert all(ch.isprintable() for ch in reason), reason
    full_reason = reason
    reason = reason.replace(FORMAT_HINT, "")  # the example number in the hint is ours, not theirs
    stripped = text.strip()
    if len(stripped) >= 6 and stripped in reason:
        # An echo changes with what was typed; our own wording does not.
        assert reason_for is not None and stripped.swapcase() != stripped, reason
        assert reason_for(text.swapcase()) == full_reason, reason
    typed_digits = "".join(ch for ch in text if ch in "0123456789")
    if len(typed_digits) >= 8:
        assert typed_digits not in reason


@pytest.mark.parametrize(
    ("text", "policy", "words"),
    [
        (
            "+1 809 234 5678",
            NANP,
            ["+1 809 ••• 5678", "the Dominican Republic (DO)", "calls may only go to US, CA"],
        ),
        ("+1 876 523 0123", NANP, ["Jamaica (JM)"]),
        ("+1 900 234 5678", US_ONLY, ["premium-rate", "+1 900 ••• 5678"]),
        ("+1 800 234 5678", US_ONLY, ["toll-free"]),
        ("+1 500 234 5678", US_ONLY, ["personal"]),
        ("+1 310 1234", NANP, ["UAN"]),
        ("+1 600 201 2345", NANP, ["VoIP"]),
        ("+44 7640 123456", UK, ["pager"]),
        ("+49 180 12345", GERMANY, ["shared-cost"]),
        ("+49 177 991234567", GERMANY, ["voicemail"]),
        ("+18144043093x9", US_ONLY, ["xtensions can't be dialled", "main number"]),
        ("555-CALL", US_ONLY, ["letters"]),
        ("+1814٣043093", US_ONLY, ["digits other than plain 0-9"]),
        ("+1814\u202e4043093", US_ONLY, ["invisible"]),
        ("12", US_ONLY, ["+18144043093 or (814) 404-3093"]),
        ("+800 1234 5678", US_ONLY, ["non-geographic"]),
        ("404-3093", US_ONLY, ["area code"]),
        # Another country's international prefix: the number it likely meant, and what to type.
        ("00 44 20 7946 0958", DialPolicy(allowed_regions=frozenset({"US", "GB"})),
         ["If you meant +44 207 ••• 0958, type + in place of the leading 00."]),
        ("001 814 404 3093", US_ONLY, ["If you meant +1 814 ••• 3093", "leading 00"]),
        ("011 1 814 404 3093", UK, ["If you meant +1 814 ••• 3093", "leading 011"]),
        ("tel:+18144043093;ext=12", US_ONLY, ["xtensions can't be dialled"]),
        ("tel:", US_ONLY, ["No phone number was given"]),
    ],
)
def test_reason_says_what_and_what_next(text: str, policy: DialPolicy, words: list[str]) -> None:
    reason = rejection(text, policy).reason
    for word in words:
        assert word in reason


def test_type_reason_lists_the_allowed_types_once() -> None:
    reason = rejection("+1 900 234 5678").reason
    assert "only landline or mobile numbers can be called" in reason


def test_allowed_types_are_honoured() -> None:
    policy = DialPolicy(allowed_types=DEFAULT_ALLOWED_TYPES | {"TOLL_FREE"})
    assert check_dialable("+1 800 234 5678", policy).type == "TOLL_FREE"
    mobile_only = DialPolicy(
        default_region="GB", allowed_regions=frozenset({"GB"}), allowed_types=frozenset({"MOBILE"})
    )
    assert check_dialable("07400 123456", mobile_only).type == "MOBILE"
    assert rejection("020 7946 0958", mobile_only).code is RejectCode.TYPE_NOT_ALLOWED


def test_blocked_prefix_beats_an_allowed_type() -> None:
    policy = DialPolicy(
        allowed_types=DEFAULT_ALLOWED_TYPES | {"PREMIUM_RATE"}, blocked_prefixes=("+1900",)
    )
    assert rejection("+1 900 234 5678", policy).code is RejectCode.BLOCKED_PREFIX
    assert check_dialable("+1 814 404 3093", policy).e164 == "+18144043093"


# --- parse_number, to_e164 -----------------------------------------------------------------------


def test_parse_number_reads_national_format_in_default_region() -> None:
    number = parse_number("(814) 404-3093", "US")
    assert phonenumbers.format_number(number, PhoneNumberFormat.E164) == "+18144043093"
    number = parse_number("020 7946 0958", "GB")
    assert phonenumbers.format_number(number, PhoneNumberFormat.E164) == "+442079460958"


def test_parse_number_without_a_usable_default_region() -> None:
    with pytest.raises(NumberRejected) as info:
        parse_number("8144043093", "ZZ")
    assert info.value.code is RejectCode.NOT_A_NUMBER
    assert "country code" in info.value.reason
    assert phonenumbers.format_number(parse_number("+18144043093", "ZZ"), 0) == "+18144043093"


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("+1 814 555 0100", "+18145550100"),  # fictional 555-01xx: fine as a caller ID
        ("(814) 555-0100", "+18145550100"),
        ("+18144043093", "+18144043093"),
        ("+1 200 555 0100", "+12005550100"),  # possible though not valid
    ],
)
def test_to_e164(text: str, e164: str) -> None:
    assert to_e164(text, "US") == e164


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", RejectCode.EMPTY),
        ("404-3093", RejectCode.INVALID),  # would become "+14043093"
        ("+1 814 555 0100 x1", RejectCode.EXTENSION),
        ("+1 814 555 01", RejectCode.INVALID),
        ("555-CALL", RejectCode.BAD_CHARACTERS),
        ("+999 555 0100", RejectCode.NOT_A_NUMBER),
    ],
)
def test_to_e164_refuses(text: str, code: RejectCode) -> None:
    with pytest.raises(NumberRejected) as info:
        to_e164(text, "US")
    assert info.value.code is code
    assert_safe_reason(info.value.reason, text)


# --- mask, describe_region -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+18144043093", "+1 814 ••• 3093"),
        ("+442079460958", "+44 207 ••• 0958"),
        ("+4930123456", "+49 •••56"),  # 8-digit national number
        ("+4915123456789", "+49 151 ••• 6789"),
        ("+80012345678", "+800 •••78"),
        ("+24762889", "+247 •••89"),  # Ascension Island: 5-digit national numbers
        ("+13101234", "+1 •••34"),
        ("+12", "+1 •••"),
        ("+999123456789", "•••89"),  # no such country code
        ("8144043093", "•••93"),
        ("+18144043093x9", "•••39"),
        ("12", "•••"),
        ("not a number", "•••"),
        ("", "•••"),
        ("+1814٣043093", "•••93"),
    ],
)
def test_mask(value: str, masked: str) -> None:
    assert mask(value) == masked


@given(st.text())
@PROPERTY_SETTINGS
def test_mask_never_raises_and_never_shows_more_than_two_digits_of_junk(value: str) -> None:
    result = mask(value)
    if not result.startswith("+"):
        assert result.startswith("•••")
        assert len(result) <= 5


@pytest.mark.parametrize(
    ("region", "description"),
    [
        ("DO", "the Dominican Republic (DO)"),
        ("US", "the United States (US)"),
        ("CA", "Canada (CA)"),
        ("JM", "Jamaica (JM)"),
        ("VA", "Vatican City (VA)"),
        ("ZZ", "ZZ"),
    ],
)
def test_describe_region(region: str, description: str) -> None:
    assert describe_region(region) == description


# --- DialPolicy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_region": "XX"},
        {"allowed_regions": frozenset()},
        {"allowed_regions": frozenset({"US", "XX"})},
        {"allowed_regions": frozenset({"001"})},
        {"allowed_types": frozenset()},
        {"allowed_types": frozenset({"PREMIUM"})},
        {"blocked_prefixes": ("1900",)},
        {"blocked_prefixes": ("+",)},
        {"blocked_prefixes": ("+1 900",)},
    ],
)
def test_policy_refuses_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DialPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_accepts_plain_collections_from_config() -> None:
    policy = DialPolicy(
        allowed_regions=["US", "CA"],  # type: ignore[arg-type]
        allowed_types={"MOBILE"},  # type: ignore[arg-type]
        blocked_prefixes="+1900",  # type: ignore[arg-type]
    )
    assert policy.allowed_regions == frozenset({"US", "CA"})
    assert policy.allowed_types == frozenset({"MOBILE"})
    assert policy.blocked_prefixes == ("+1900",)
    hash(policy)


def test_defaults() -> None:
    assert US_ONLY.default_region == "US"
    assert US_ONLY.allowed_regions == frozenset({"US"})
    assert DEFAULT_ALLOWED_TYPES == frozenset({"FIXED_LINE", "MOBILE", "FIXED_LINE_OR_MOBILE"})
    assert set(NUMBER_TYPE_NAMES.values()) >= DEFAULT_ALLOWED_TYPES


# --- properties ----------------------------------------------------------------------------------

TYPE_CODES = sorted(NUMBER_TYPE_NAMES)
EXAMPLES: list[tuple[str, phonenumbers.PhoneNumber]] = [
    (region, number)
    for region in sorted(phonenumbers.SUPPORTED_REGIONS)
    for type_code in TYPE_CODES
    if (number := phonenumbers.example_number_for_type(region, type_code)) is not None
]
NON_GEO_EXAMPLES: list[phonenumbers.PhoneNumber] = [
    number
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    if (number := phonenumbers.example_number_for_non_geo_entity(code)) is not None
]
FORMATS = [PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL]
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
ALL_TYPES = sorted(NUMBER_TYPE_NAMES.values())

policies = (
    st.builds(
        DialPolicy,
        default_region=st.sampled_from(REGIONS),
        allowed_regions=st.frozensets(
            st.sampled_from(["US", "CA", "GB", "DE", "DO", "JM", "PR", "FR", "AU", "IN"]),
            min_size=1,
        ),
        allowed_types=st.frozensets(st.sampled_from(ALL_TYPES), min_size=1),
        blocked_prefixes=st.lists(DIALLING_PREFIXES, max_size=2).map(tuple),
    )
    | st.sampled_from([US_ONLY, NANP, UK, GERMANY, BLOCKING])
    | st.sampled_from([US_ONLY, NANP])
)

NUMBER_ALPHABET = "0123456789+ -.()x#;ext=٣＋\u202e\u200b\t"


nanp_numbers = NANP_NUMBERS


# Built once: a strategy made inside a composite is made again at every draw, and sampled_from
# hashes its whole list each time (about a third of this module's CPU when it was).
EXAMPLE_NUMBERS = st.sampled_from(EXAMPLES)
EXAMPLE_FORMATS = st.sampled_from(FORMATS)
EDITS = st.sampled_from(["insert", "delete", "replace"])
EDIT_COUNTS = st.integers(1, 3)
EDITED_CHARS = st.sampled_from(NUMBER_ALPHABET)


@functools.cache
def positions(length: int) -> st.SearchStrategy[int]:
    """An index into, or just past, a list of `length` items."""
    return st.integers(0, length)


@st.composite
def formatted_examples(draw: st.DrawFn) -> tuple[str, str]:
    """(text, default region): a real example number formatted one of the usual ways."""
    region, number = draw(EXAMPLE_NUMBERS)
    fmt = draw(EXAMPLE_FORMATS)
    return phonenumbers.format_number(number, fmt), region


EXAMPLE_TEXTS = formatted_examples().map(lambda pair: pair[0])
MANGLED_FROM = EXAMPLE_TEXTS | nanp_numbers


@st.composite
def mangled_examples(draw: st.DrawFn) -> str:
    """A real number with a few characters inserted, deleted or swapped."""
    text = draw(MANGLED_FROM)
    chars = list(text)
    for _ in range(draw(EDIT_COUNTS)):
        index = draw(positions(len(chars)))
        action = draw(EDITS)
        if action == "insert" or not chars:
            chars.insert(index, draw(EDITED_CHARS))
        elif index < len(chars):
            if action == "delete":
                del chars[index]
            else:
                chars[index] = draw(EDITED_CHARS)
    return "".join(chars)


any_number_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=NUMBER_ALPHABET, max_size=40),
    EXAMPLE_TEXTS,
    mangled_examples(),
    nanp_numbers,
)


def assert_dialable_invariants(result: DialableNumber, policy: DialPolicy) -> None:
    number = phonenumbers.parse(result.e164, None)
    assert result.e164.startswith("+")
    assert re.fullmatch(r"\+[1-9][0-9]{1,14}", result.e164)
    assert phonenumbers.is_valid_number(number)
    assert phonenumbers.format_number(number, PhoneNumberFormat.E164) == result.e164
    assert result.region == phonenumbers.region_code_for_number(number)
    assert result.region in policy.allowed_regions
    assert result.type == NUMBER_TYPE_NAMES[phonenumbers.number_type(number)]
    assert result.type in policy.allowed_types
    assert not any(result.e164.startswith(prefix) for prefix in policy.blocked_prefixes)
    assert check_dialable(result.e164, policy).e164 == result.e164


@given(text=any_number_text, policy=policies)
@example(text="number", policy=US_ONLY)  # a word of the reason's own wording, not an echo
@PROPERTY_SETTINGS
def test_check_dialable_only_accepts_or_rejects(text: str, policy: DialPolicy) -> None:
    try:
        result = check_dialable(text, policy)
    except NumberRejected as error:
        event(f"rejected: {error.code}")
        assert isinstance(error.code, RejectCode)
        assert_safe_reason(error.reason, text, lambda t: reason_of(check_dialable, t, policy))
    else:
        event("accepted")
        assert isinstance(result, DialableNumber)
        assert_dialable_invariants(result, policy)


@given(text=mangled_examples() | nanp_numbers, policy=policies)
@settings(PROPERTY_SETTINGS, max_examples=150)
def test_refused_as_invalid_exactly_when_phonenumbers_calls_it_invalid(
    text: str, policy: DialPolicy
) -> None:
    """check_dialable asks for the number's type, not for its validity: the two must agree."""
    try:
        number = parse_number(text, policy.default_region)
    except NumberRejected:
        assume(False)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    assume(re.fullmatch(r"\+[1-9][0-9]{1,14}", e164))
    try:
        check_dialable(text, policy)
    except NumberRejected as error:
        code: RejectCode | None = error.code
    else:
        code = None
    event("invalid" if code is RejectCode.INVALID else "valid")
    assert (code is RejectCode.INVALID) == (not phonenumbers.is_valid_number(number))


@given(text=any_number_text, region=st.sampled_from(REGIONS))
@example(text="00000000000000", region="NG")  # leading zeros past E.164's 15 digits
@PROPERTY_SETTINGS
def test_to_e164_only_accepts_or_rejects(text: str, region: str) -> None:
    try:
        e164 = to_e164(text, region)
    except NumberRejected as error:
        assert_safe_reason(error.reason, text, lambda t: reason_of(to_e164, t, region))
    else:
        assert re.fullmatch(r"\+[1-9][0-9]{1,14}", e164)
        assert phonenumbers.is_possible_number(phonenumbers.parse(e164, None))


@given(
    example=formatted_examples(),
    allowed_regions=st.frozensets(st.sampled_from(REGIONS), min_size=1, max_size=4),
    allowed_types=st.frozensets(st.sampled_from(ALL_TYPES), min_size=1, max_size=4),
    use_example_region=st.booleans(),
)
@PROPERTY_SETTINGS
def test_example_numbers_accepted_iff_region_and_type_allowed(
    example: tuple[str, str],
    allowed_regions: frozenset[str],
    allowed_types: frozenset[str],
    use_example_region: bool,
) -> None:
    text, region = example
    number = phonenumbers.parse(text, region)
    actual_region = phonenumbers.region_code_for_number(number)
    actual_type = NUMBER_TYPE_NAMES[phonenumbers.number_type(number)]
    assert actual_region is not None
    if use_example_region:
        # Make acceptance likely, so both branches get exercised.
        allowed_regions |= {actual_region}
        allowed_types |= {actual_type}
    policy = DialPolicy(
        default_region=region, allowed_regions=allowed_regions, allowed_types=allowed_types
    )

    # A "landline or mobile" number is one of the two: allowed where both are.
    both = {"FIXED_LINE", "MOBILE"} <= allowed_types and actual_type == "FIXED_LINE_OR_MOBILE"
    expected_ok = actual_region in allowed_regions and (actual_type in allowed_types or both)
    try:
        result = check_dialable(text, policy)
    except NumberRejected as error:
        event(f"rejected: {error.code}")
        assert not expected_ok, (text, region, error.code, error.reason)
        if actual_region not in allowed_regions:
            assert error.code is RejectCode.REGION_NOT_ALLOWED
        else:
            assert error.code is RejectCode.TYPE_NOT_ALLOWED
    else:
        event("accepted")
        assert expected_ok
        assert result.e164 == phonenumbers.format_number(number, PhoneNumberFormat.E164)
        assert (result.region, result.type) == (actual_region, actual_type)
        assert_dialable_invariants(result, policy)


@pytest.mark.parametrize("number", NON_GEO_EXAMPLES, ids=lambda n: f"+{n.country_code}")
@pytest.mark.parametrize("fmt", [PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL])
def test_non_geographic_examples_are_refused(number: phonenumbers.PhoneNumber, fmt: int) -> None:
    text = phonenumbers.format_number(number, fmt)
    assert rejection(text, NANP).code is RejectCode.NON_GEOGRAPHIC


@given(example=formatted_examples())
@PROPERTY_SETTINGS
def test_mask_never_reveals_a_valid_number(example: tuple[str, str]) -> None:
    text, region = example
    number = phonenumbers.parse(text, region)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    national = phonenumbers.national_significant_number(number)
    masked = mask(e164)
    shown_digits = "".join(ch for ch in masked if ch.isdigit())
    assert e164 not in masked
    assert national not in shown_digits[len(str(number.country_code)) :]
    assert e164[1:] != shown_digits
    assert "•••" in masked


def test_every_example_number_round_trips_through_every_format() -> None:
    """The exhaustive version of the property above, for the policy that allows everything."""
    for region, number in EXAMPLES:
        everything = DialPolicy(
            default_region=region,
            allowed_regions=frozenset({phonenumbers.region_code_for_number(number) or region}),
            allowed_types=frozenset(ALL_TYPES),
        )
        e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        for fmt in FORMATS:
            text = phonenumbers.format_number(number, fmt)
            assert check_dialable(text, everything).e164 == e164, (region, text)
