"""The dialling policy: which numbers may be called, applied to a parsed number."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType, ValidationResult

from bot.masking import E164_SHAPE, mask
from bot.phone.names import (
    DEFAULT_ALLOWED_TYPES,
    NUMBER_TYPE_NAMES,
    TYPE_WORDS,
    describe_region,
    kind_of_number,
)
from bot.phone.parsing import (
    E164_PREFIX,
    FORMAT_HINT,
    NumberRejected,
    RejectCode,
    fold_width,
    parse_number,
    possible_detail,
)


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
        allowed_types = frozenset(self.allowed_types)
        if {"FIXED_LINE", "MOBILE"} <= allowed_types:
            # phonenumbers types US and Canadian numbers "landline or mobile" (it can't tell
            # which): one of the two either way, so allowing both allows it too.
            allowed_types |= {"FIXED_LINE_OR_MOBILE"}
        object.__setattr__(self, "allowed_types", allowed_types)
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
        unknown_types = sorted(t for t in self.allowed_types if t not in TYPE_WORDS)
        if unknown_types:
            raise ValueError(
                f"allowed_types has unknown names: {unknown_types}; "
                f"expected some of {sorted(TYPE_WORDS)}"
            )
        bad_prefixes = [p for p in self.blocked_prefixes if not E164_PREFIX.fullmatch(p)]
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


def check_dialable(text: str, policy: DialPolicy) -> DialableNumber:
    """Parse ``text`` and apply ``policy``. Returns the number to dial or raises NumberRejected."""
    number = parse_number(text, policy.default_region)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)

    if not E164_SHAPE.match(e164):
        # phonenumbers calls some over-long national numbers valid (+49 201 00000000000); E.164
        # allows at most 15 digits, and the voice API takes nothing else.
        raise NumberRejected(
            RejectCode.INVALID,
            f"{mask(e164)} has more digits than a phone number can (at most 15 with the country "
            "code). " + (_abroad_hint(text) or f"Check the digits, like {FORMAT_HINT}."),
        )
    # A number's type is UNKNOWN exactly when `is_valid_number` is false: both match its digits
    # against the metadata of the region they point to. Asking once for the type, rather than
    # for validity and then for the type, spares matching the number twice more (a third of
    # this check's CPU, which each call of a burst pays before its POST).
    number_type = phonenumbers.number_type(number)
    if number_type == PhoneNumberType.UNKNOWN:
        raise NumberRejected(
            RejectCode.INVALID,
            f"{mask(e164)} isn't a valid phone number ({_invalid_detail(number)}). "
            + (_abroad_hint(text) or f"Check the digits and the country code, like {FORMAT_HINT}."),
        )
    region = phonenumbers.region_code_for_number(number)
    if region is None or region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        raise NumberRejected(
            RejectCode.NON_GEOGRAPHIC,
            f"{mask(e164)} is an international non-geographic number (not in any country), "
            f"so it can't be called. Call a regular number in {_list_regions(policy)} instead.",
        )
    if region not in policy.allowed_regions:
        raise NumberRejected(
            RejectCode.REGION_NOT_ALLOWED,
            f"{mask(e164)} is in {describe_region(region)}; calls may only go to "
            f"{_list_regions(policy)}. Ask an admin if calls there should be allowed.",
        )
    type_name = NUMBER_TYPE_NAMES.get(number_type, "UNKNOWN")
    if type_name not in policy.allowed_types:
        raise NumberRejected(
            RejectCode.TYPE_NOT_ALLOWED,
            f"{mask(e164)} is {kind_of_number(type_name)}; only {_list_types(policy)} numbers "
            "can be called. Call a regular number instead.",
        )
    if any(e164.startswith(prefix) for prefix in policy.blocked_prefixes):
        raise NumberRejected(
            RejectCode.BLOCKED_PREFIX,
            f"{mask(e164)} is in a number range this bot may not call. "
            "Ask an admin if you think it should be allowed.",
        )
    return DialableNumber(e164=e164, region=region, type=type_name)


# How numbers abroad are dialled from elsewhere: "00" in most of the world, "011" in North America.
_INTERNATIONAL_PREFIXES = ("011", "00")


def _abroad_hint(text: str) -> str | None:
    """For a number written with another country's international prefix (00 44 … typed where
    numbers are read as North American), the number it most likely meant, and what to type."""
    text = fold_width(text)
    digits = "".join(ch for ch in text if ch.isascii() and ch.isdigit())
    if "+" in text or not digits.startswith(_INTERNATIONAL_PREFIXES):
        return None
    prefix = next(p for p in _INTERNATIONAL_PREFIXES if digits.startswith(p))
    try:
        meant = phonenumbers.parse("+" + digits[len(prefix):], None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(meant):
        return None
    e164 = phonenumbers.format_number(meant, PhoneNumberFormat.E164)
    return f"If you meant {mask(e164)}, type + in place of the leading {prefix}."


def _invalid_detail(number: phonenumbers.PhoneNumber) -> str:
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == ValidationResult.IS_POSSIBLE:
        return "no such area code or number range is in use"
    return possible_detail(reason)


def _list_types(policy: DialPolicy) -> str:
    names = set(policy.allowed_types)
    if {"FIXED_LINE", "MOBILE"} <= names:
        # "landline, mobile, landline or mobile" says the same thing twice.
        names.discard("FIXED_LINE_OR_MOBILE")
    words = sorted(TYPE_WORDS[name] for name in names)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _list_regions(policy: DialPolicy) -> str:
    regions = sorted(policy.allowed_regions, key=lambda r: (r != policy.default_region, r))
    return ", ".join(regions)
