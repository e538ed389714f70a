"""The strategies of tests/strategies.py draw only strings of the shape their regular expression
describes (and, built part by part from it, can draw every one of them)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import SHAPES


@pytest.mark.parametrize("pattern", list(SHAPES))
def test_every_string_drawn_has_its_shape(pattern: str) -> None:
    shape = re.compile(pattern)

    @given(SHAPES[pattern])
    @settings(max_examples=200, deadline=None)
    def drawn(text: str) -> None:
        assert shape.fullmatch(text), text

    drawn()


def test_a_drawn_string_of_another_shape_is_noticed() -> None:
    # The check above can fail: the numbers' shape does not hold a word.
    with pytest.raises(AssertionError):
        @given(st.just("abc"))
        def drawn(text: str) -> None:
            assert re.fullmatch(r"\+?[0-9]{1,3}([ .-]?\(?[0-9]{1,4}\)?){1,4}", text)

        drawn()
