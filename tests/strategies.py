"""Hypothesis strategies for texts of a simple shape, built from parts rather than with
`st.from_regex`, which draws the same strings at about three times the CPU: test_command,
test_phone and test_hostile_input took 19.5 CPU-s with it, 14.5 without. Each strategy names the
regular expression whose strings it draws, all of them and nothing else (tests/test_strategies.py
checks the "nothing else")."""

from __future__ import annotations

import string

from hypothesis import strategies as st

DIGITS = string.digits
LETTERS = string.ascii_letters
SEPARATORS = " .-"


def joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


def optional(part: st.SearchStrategy[str] | str) -> st.SearchStrategy[str]:
    """`(part)?`"""
    return st.just("") | (st.just(part) if isinstance(part, str) else part)


def one_of_chars(chars: str) -> st.SearchStrategy[str]:
    """`[chars]`"""
    return st.sampled_from(chars)


def digits(least: int, most: int) -> st.SearchStrategy[str]:
    """`[0-9]{least,most}`"""
    return st.text(alphabet=DIGITS, min_size=least, max_size=most)


def repeated(part: st.SearchStrategy[str], least: int, most: int) -> st.SearchStrategy[str]:
    """`(part){least,most}`"""
    return st.lists(part, min_size=least, max_size=most).map("".join)


def words() -> st.SearchStrategy[str]:
    """`[A-Za-z][A-Za-z0-9_-]{0,12}`"""
    return joined(one_of_chars(LETTERS), st.text(alphabet=LETTERS + DIGITS + "_-", max_size=12))


# The shapes the property tests draw, each under the regular expression it stands for
# (tests/test_strategies.py holds every string drawn to it).
NUMBER_PARTS = joined(  # [+(]?[0-9]{1,4}[)]?([ .-]?[0-9]{1,4}){0,3}
    optional(one_of_chars("+(")), digits(1, 4), optional(")"),
    repeated(joined(optional(one_of_chars(SEPARATORS)), digits(1, 4)), 0, 3),
)
NUMBER_TEXTS = joined(  # \+?[0-9]{1,3}([ .-]?\(?[0-9]{1,4}\)?){1,4}
    optional("+"), digits(1, 3),
    repeated(joined(optional(one_of_chars(SEPARATORS)), optional("("), digits(1, 4), optional(")")),
             1, 4),
)
# \+[1-9][0-9]{0,3}
DIALLING_PREFIXES = joined(st.just("+"), one_of_chars("123456789"), digits(0, 3))
NANP_NUMBERS = joined(  # (\+1 ?|1-)?\(?[2-9][0-9]{2}\)?[ .-]?[2-9][0-9]{2}[ .-]?[0-9]{4}
    optional(st.sampled_from(["+1", "+1 ", "1-"])), optional("("), one_of_chars("23456789"),
    digits(2, 2), optional(")"), optional(one_of_chars(SEPARATORS)), one_of_chars("23456789"),
    digits(2, 2), optional(one_of_chars(SEPARATORS)), digits(4, 4),
)

SHAPES: dict[str, st.SearchStrategy[str]] = {
    r"[A-Za-z][A-Za-z0-9_-]{0,12}": words(),
    r"[+(]?[0-9]{1,4}[)]?([ .-]?[0-9]{1,4}){0,3}": NUMBER_PARTS,
    r"\+?[0-9]{1,3}([ .-]?\(?[0-9]{1,4}\)?){1,4}": NUMBER_TEXTS,
    r"\+[1-9][0-9]{0,3}": DIALLING_PREFIXES,
    r"(\+1 ?|1-)?\(?[2-9][0-9]{2}\)?[ .-]?[2-9][0-9]{2}[ .-]?[0-9]{4}": NANP_NUMBERS,
}
