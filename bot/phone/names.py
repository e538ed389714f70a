"""What numbers are called in words: their types and their countries. Pure data and wording."""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

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

TYPE_WORDS: dict[str, str] = {
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

REGION_NAMES: dict[str, str] = {
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


def describe_region(region: str) -> str:
    """``"DO"`` -> ``"the Dominican Republic (DO)"``; unknown codes come back as they are."""
    name = REGION_NAMES.get(region.upper())
    return f"{name} ({region.upper()})" if name else region


def country_of(e164: str) -> str | None:
    """The country of a number already checked (E.164), in words as `describe_region` says it
    (``"+14165550123"`` -> ``"Canada (CA)"``); None where it names none."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except NumberParseException:
        return None
    if region is None or region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        return None
    return describe_region(region)


def kind_of_number(type_name: str) -> str:
    if type_name not in TYPE_WORDS or type_name == "UNKNOWN":
        return "a number of unknown type"
    return f"a {TYPE_WORDS[type_name]} number"
