"""Phone numbers: parse, normalise and classify them, and apply the dialling policy.

Pure functions, no I/O. Every number a user types is hostile until proven otherwise: a wrong
call costs money (toll fraud) or wakes the wrong person. So the rules here refuse rather than
repair (the one exception: full-width digits, which read exactly as the ASCII ones they are folded
to, see :func:`fold_width`), and the only string ever handed to the dialler is the E.164 form
produced by ``phonenumbers.format_number(..., E164)`` in :func:`check_dialable`.

Errors (the whole tree is drawn in bot/errors.py)::

    CallbotError
     └── NumberRejected        .code: RejectCode, .reason: plain words for the user
                               (never echoes the raw input; shows the masked number or nothing)

``DialPolicy`` raises ``ValueError`` when it is built from a bad configuration, so that a typo
in the policy file stops the bot at start-up instead of at the first call.
"""

from bot.masking import mask, mask_numbers_in
from bot.phone.names import DEFAULT_ALLOWED_TYPES, NUMBER_TYPE_NAMES, country_of, describe_region
from bot.phone.parsing import (
    FORMAT_HINT,
    MAX_NUMBER_CHARS,
    NumberRejected,
    RejectCode,
    fold_width,
    parse_number,
    to_e164,
)
from bot.phone.policy import DialableNumber, DialPolicy, check_dialable

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
    "country_of",
    "describe_region",
    "fold_width",
    "mask",
    "mask_numbers_in",
    "parse_number",
    "to_e164",
]
