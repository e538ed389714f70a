"""Masking phone numbers: how every number the bot shows or logs is written (`+1 814 ••• 3093`).

Apart from bot.phone (whose refusals need bot.errors, which needs the Evo Voice client) so that the
Evo Voice client can mask what the server says too: a refusal quoting the number it refused.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

MASK = "•••"
E164_SHAPE = re.compile(r"\+([1-9][0-9]{1,14})\Z")
_DIGITS = frozenset("0123456789")
MIN_NUMBER_DIGITS = 7  # fewer digits: a count, a time, an id's part, not a phone number


# A phone number in text, written as people type and paste it, or as a URL carries it (a query's
# `to=%2B18144043093`, an exception quoting the request it failed): a plus and separators
# percent-encoded too, and no run across lines. Between two digits of one number: spaces
# (no-break and narrow ones too, as pasted; or their escapes, as a repr writes them) or marks
# (brackets, dots, slashes, any dash, full-width ones too): up to two spaces, a mark with a space
# either side ("+1 - 814 - 404 - 3093" is one number), two marks ("(814)-404"), a mark, a space
# and a mark ("(814) (404)"), or a run of marks alone ("814---404---3093", "+1.814...404"), all
# of which phonenumbers reads, and the bot dials, as one number. A space before two marks breaks
# the run ("+18144043093 ((814) 404-3093)" holds two numbers, each masked), and so does a letter
# before it (a hex address, an id: not a number someone typed).
# Characters that show nothing (zero-width spaces and joiners, the word joiner, a byte order mark,
# a soft hyphen, direction marks, embeddings and isolates), sent or escaped: between two digits
# they hide no digit, so the digits either side are one number ("8\u200b1\u200b4…" included).
_INVISIBLE = (r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]|"
              r"%C2%AD|%E2%80%(?:8[B-F]|A[A-E])|%E2%81%(?:A[0-4]|A[6-9])|%EF%BB%BF|"
              r"\\(?:xad|u20(?:0[b-f]|2[a-e]|6[0-4]|6[6-9])|ufeff)")
_SPACE = (r"(?:[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]|%20|%C2%A0|%E2%80%AF|"
          r"\\(?:xa0|u20(?:0[0-9a]|2f|5f)|u3000)|" + _INVISIBLE + ")")
_MARK = (r"(?:[()./\-\u2010-\u2015\u2212\uff08\uff09\uff0d\uff0e\uff0f]|"
         r"%(?:28|29|2[DdEeFf])|%E2%80%9[0-5])")
_GAP = (rf"(?:{_SPACE}?{_MARK}{_SPACE}?|{_MARK}{_SPACE}{_MARK}|{_MARK}{{2,}}|"
        rf"{_SPACE}{{0,2}})")
_NUMBER_IN_TEXT = re.compile(
    rf"(?<![0-9A-Za-z_])(?:\+|\uff0b|%2[Bb])?\d(?:{_GAP}\d)*", re.IGNORECASE
)
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}|\\(?:x[0-9a-f]{2}|u[0-9a-f]{4})")


def mask_numbers_in(text: str) -> str:
    """`text` with every phone number in it masked (`mask`): what Evo Voice says of a call (who
    answered, its outcome), words typed beside a number, tracebacks, errors quoting URLs. One
    reading for all of them: a number pasted into a flow's words with en dashes is the same number
    in the audit trail as in a log line."""

    def masked(found: re.Match[str]) -> str:
        run = found.group()
        digits = "".join(str(unicodedata.decimal(ch)) for ch in _ESCAPE.sub("", run)
                         if ch.isdecimal())
        if len(digits) < MIN_NUMBER_DIGITS:
            return run
        plus = run.startswith(("+", "\uff0b", "%2B", "%2b"))
        return mask(("+" if plus else "") + digits)

    return _NUMBER_IN_TEXT.sub(masked, text)


def mask(e164: str) -> str:
    """Show enough of a number to recognise it, never all of it. Never raises.

    ``"+18144043093"`` -> ``"+1 814 ••• 3093"``; national numbers shorter than 9 digits show only
    the last 2 (``"+247 •••89"``); anything that isn't E.164 shows at most its last 2 digits.
    """
    if not isinstance(e164, str):
        return MASK
    match = E164_SHAPE.match(e164)
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
