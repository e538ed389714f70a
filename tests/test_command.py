"""bot.calls.command_text: splitting `/call` text into number, flow and caller ID."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.calls.command_text import (
    MAX_TEXT,
    SUBCOMMANDS,
    USAGE,
    CallArgs,
    Command,
    CommandRejected,
    FormArgs,
    HelpArgs,
    SubcommandArgs,
    parse_command,
)
from bot.phone import DialPolicy, NumberRejected, RejectCode, check_dialable, to_e164
from tests.strategies import NUMBER_PARTS, NUMBER_TEXTS, words

PROPERTY_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", FormArgs(number_text=None)),
        ("   ", FormArgs(number_text=None)),
        ("help", HelpArgs()),
        ("HELP", HelpArgs()),
        ("Help me please", HelpArgs()),
        ("-h", HelpArgs()),
        ("--help", HelpArgs()),
        ("?", HelpArgs()),
        ("history", SubcommandArgs(name="history", args=())),
        # Full-width, as a CJK input mode types them: the word is folded, its arguments kept.
        ("ｈｅｌｐ", HelpArgs()),
        ("？", HelpArgs()),
        ("ＨＩＳＴＯＲＹ　＠ｔａｒｏ", SubcommandArgs(name="history", args=("＠ｔａｒｏ",))),
        ("ｏｎｃａｌｌ ｔａｋｅ", SubcommandArgs(name="oncall", args=("ｔａｋｅ",))),
        ("History 7 days", SubcommandArgs(name="history", args=("7", "days"))),
        ("ONCALL  platform   team", SubcommandArgs(name="oncall", args=("platform", "team"))),
        (
            "+18144043093 escalation",
            CallArgs(number_text="+18144043093", flow_text="escalation", caller_id_text=None),
        ),
        (
            "+1 814 404 3093 escalation",
            CallArgs(number_text="+1 814 404 3093", flow_text="escalation", caller_id_text=None),
        ),
        (
            "  +1 (814) 404-3093    escalation  ",
            CallArgs(number_text="+1 (814) 404-3093", flow_text="escalation", caller_id_text=None),
        ),
        (
            "814.404.3093 escalation",
            CallArgs(number_text="814.404.3093", flow_text="escalation", caller_id_text=None),
        ),
        (
            "+18144043093 wake up call +18145550100",
            CallArgs(
                number_text="+18144043093", flow_text="wake up call", caller_id_text="+18145550100"
            ),
        ),
        (
            "(814) 404-3093 wake-up-call +18145550100",
            CallArgs(
                number_text="(814) 404-3093",
                flow_text="wake-up-call",
                caller_id_text="+18145550100",
            ),
        ),
        (
            "+18144043093 escalation +1 814 555 0100",
            CallArgs(
                number_text="+18144043093",
                flow_text="escalation",
                caller_id_text="+1 814 555 0100",
            ),
        ),
        (
            '+18144043093 "wake up call"',
            CallArgs(number_text="+18144043093", flow_text="wake up call", caller_id_text=None),
        ),
        (
            "+18144043093 “wake up call” +18145550100",
            CallArgs(
                number_text="+18144043093", flow_text="wake up call", caller_id_text="+18145550100"
            ),
        ),
        (
            "+18144043093 ‘escalation’",
            CallArgs(number_text="+18144043093", flow_text="escalation", caller_id_text=None),
        ),
        (
            '+18144043093 "drill" "',
            CallArgs(number_text="+18144043093", flow_text="drill", caller_id_text=None),
        ),
        (
            "+18144043093 'escalation'",
            CallArgs(number_text="+18144043093", flow_text="escalation", caller_id_text=None),
        ),
        # Quotes keep a trailing number inside the flow name.
        (
            '+18144043093 "drill 2"',
            CallArgs(number_text="+18144043093", flow_text="drill 2", caller_id_text=None),
        ),
        (
            "+18144043093 v2-drill",
            CallArgs(number_text="+18144043093", flow_text="v2-drill", caller_id_text=None),
        ),
        # A first word with digits and letters is still the number; bot.phone says what's wrong.
        (
            "555-CALL escalation",
            CallArgs(number_text="555-CALL", flow_text="escalation", caller_id_text=None),
        ),
        (
            "+1814x9 escalation",
            CallArgs(number_text="+1814x9", flow_text="escalation", caller_id_text=None),
        ),
        # Extensions stay with the number so that bot.phone refuses them.
        (
            "+1 814 404 3093 x9 escalation",
            CallArgs(number_text="+1 814 404 3093 x9", flow_text="escalation", caller_id_text=None),
        ),
        (
            "+1 814 404 3093 ext. 12 escalation",
            CallArgs(
                number_text="+1 814 404 3093 ext. 12", flow_text="escalation", caller_id_text=None
            ),
        ),
        (
            "+18144043093 #12 escalation",
            CallArgs(number_text="+18144043093 #12", flow_text="escalation", caller_id_text=None),
        ),
        (
            "+18144043093 x ray",
            CallArgs(number_text="+18144043093", flow_text="x ray", caller_id_text=None),
        ),
        # A number but no flow: open the form, prefilled.
        ("+18144043093", FormArgs(number_text="+18144043093")),
        ("(814) 404-3093", FormArgs(number_text="(814) 404-3093")),
        ("+18144043093 +18145550100", FormArgs(number_text="+18144043093 +18145550100")),
        ('+18144043093 ""', FormArgs(number_text="+18144043093")),
        ("+18144043093 x9", FormArgs(number_text="+18144043093 x9")),
    ],
)
def test_parse_command(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "escalation +18144043093",
        "call +18144043093 escalation",
        "@oncall-bob escalation",
    ],
)
def test_must_start_with_the_number(text: str) -> None:
    with pytest.raises(CommandRejected) as info:
        parse_command(text)
    assert "Start with the number to call: /call +18144043093 escalation" in info.value.reason
    # The usage under it names every subcommand, the on-call roster's too.
    for subcommand in ("/call help", "/call history", "/call test", "/call oncall"):
        assert subcommand in info.value.reason


@pytest.mark.parametrize(
    "character",
    [
        "\n",
        "\r",
        "\t",
        "\x00",
        "\x1b",
        "\x7f",
        "\x85",
        "\u202a",
        "\u202b",
        "\u202c",
        "\u202d",
        "\u202e",  # bidi embeddings and overrides
        "\u2066",
        "\u2067",
        "\u2068",
        "\u2069",  # bidi isolates
        "\u200b",
        "\u200c",
        "\u200d",
        "\u2060",
        "\ufeff",  # zero-width
        "\u200e",
        "\u200f",
        "\u061c",  # direction marks
        "\u2028",
        "\u2029",  # line and paragraph separators
        "\ud800",  # lone surrogate
    ],
)
@pytest.mark.parametrize("where", ["in the number", "in the flow", "between words"])
def test_refuses_invisible_and_control_characters(character: str, where: str) -> None:
    text = {
        "in the number": f"+1814{character}4043093 escalation",
        "in the flow": f"+18144043093 escal{character}ation",
        "between words": f"+18144043093{character}escalation",
    }[where]
    with pytest.raises(CommandRejected) as info:
        parse_command(text)
    assert "invisible or control characters" in info.value.reason
    assert text not in info.value.reason
    if character != "\n":  # the usage text has line breaks of its own
        assert character not in info.value.reason


def test_surrounding_whitespace_is_not_a_control_character() -> None:
    assert parse_command("\n +18144043093 escalation\n") == CallArgs(
        number_text="+18144043093", flow_text="escalation", caller_id_text=None
    )


def test_refuses_text_longer_than_max() -> None:
    text = "+18144043093 " + "a" * (MAX_TEXT - 12)  # one character too many
    with pytest.raises(CommandRejected) as info:
        parse_command(text)
    assert str(MAX_TEXT) in info.value.reason
    assert "a" * 20 not in info.value.reason
    assert isinstance(parse_command("+18144043093 " + "a" * (MAX_TEXT - 13)), CallArgs)


def test_usage_shows_the_examples() -> None:
    for example in [
        "/call +18144043093 escalation",
        "/call (814) 404-3093 wake-up-call +18145550100",
        "/call help",
    ]:
        assert example in USAGE
    assert any(line.strip().startswith("/call ") and "form" in line for line in USAGE.splitlines())
    for line in USAGE.splitlines():
        if line.strip().startswith("/call ") and "+1" in line:
            assert isinstance(parse_command(line.strip().removeprefix("/call ")), CallArgs)


def test_subcommands_are_reserved() -> None:
    assert SUBCOMMANDS == frozenset({"history", "oncall", "test"})


# --- with bot.phone ------------------------------------------------------------------------------

NANP = DialPolicy(allowed_regions=frozenset({"US", "CA"}))


@pytest.mark.parametrize(
    ("text", "e164", "caller_id"),
    [
        ("+1 814 404 3093 escalation", "+18144043093", None),
        ("(814) 404-3093 wake-up-call +18145550100", "+18144043093", "+18145550100"),
        ("416 555 0123 escalation (814) 555-0100", "+14165550123", "+18145550100"),
    ],
)
def test_parts_go_on_to_the_phone_module(text: str, e164: str, caller_id: str | None) -> None:
    command = parse_command(text)
    assert isinstance(command, CallArgs)
    assert check_dialable(command.number_text, NANP).e164 == e164
    if caller_id is not None:
        assert command.caller_id_text is not None
        assert to_e164(command.caller_id_text, "US") == caller_id


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("+1 814 404 3093 ext 12 escalation", RejectCode.EXTENSION),
        ("+1814x9 escalation", RejectCode.EXTENSION),
        ("555-CALL escalation", RejectCode.BAD_CHARACTERS),
        ("“+18144043093” escalation", RejectCode.BAD_CHARACTERS),
        ("+1 809 234 5678 escalation", RejectCode.REGION_NOT_ALLOWED),
        ("+18144043093 +18145550100 escalation", RejectCode.BAD_CHARACTERS),
    ],
)
def test_phone_module_refuses_what_the_parser_passes_on(text: str, code: RejectCode) -> None:
    command = parse_command(text)
    assert isinstance(command, CallArgs)
    with pytest.raises(NumberRejected) as info:
        check_dialable(command.number_text, NANP)
    assert info.value.code is code


# --- properties ----------------------------------------------------------------------------------

NUMBERISH = "0123456789+().- "
command_text = st.one_of(
    st.text(max_size=MAX_TEXT + 20),
    st.text(alphabet=NUMBERISH + "abcxet#;=\"'“”‘’?\u202e\u200b\n\t", max_size=80),
    st.lists(
        st.one_of(
            NUMBER_PARTS,
            words(),
            st.sampled_from(["help", "oncall", "history", "x9", "ext", "12", "#1", '"', "“"]),
        ),
        max_size=8,
    ).map(" ".join),
)


def is_control(ch: str) -> bool:
    return unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"}


@given(command_text)
@PROPERTY_SETTINGS
def test_any_text_gives_a_command_or_a_rejection(text: str) -> None:
    try:
        command = parse_command(text)
    except CommandRejected as error:
        assert error.reason
        assert USAGE in error.reason or "Start with the number" in error.reason
        return
    assert isinstance(command, CallArgs | HelpArgs | FormArgs | SubcommandArgs)
    assert len(text.strip()) <= MAX_TEXT
    assert not any(is_control(ch) for ch in text.strip())
    if isinstance(command, CallArgs):
        assert command.number_text and command.flow_text
        assert command.number_text == " ".join(command.number_text.split())
        assert command.flow_text == command.flow_text.strip("'\"“”‘’ ")
        assert "  " not in command.flow_text
        if command.caller_id_text is not None:
            assert set(command.caller_id_text) <= set(NUMBERISH)


flow_words = words().filter(
    lambda word: (
        word.lower() not in {"x", "ext", "ext.", "extension"}
        and not (word[0] in "xX" and word[1:].isdigit())
        and not (word.lower().startswith("ext") and word.lstrip("extnsioETXNSIO.").isdigit())
    )
)
number_texts = NUMBER_TEXTS


@given(
    number=number_texts,
    flow=st.lists(flow_words, min_size=1, max_size=4),
    caller=st.none() | number_texts,
    quote=st.sampled_from([("", ""), ('"', '"'), ("“", "”"), ("'", "'")]),
)
@PROPERTY_SETTINGS
def test_well_formed_text_splits_into_its_parts(
    number: str, flow: list[str], caller: str | None, quote: tuple[str, str]
) -> None:
    flow_text = " ".join(flow)
    text = f"{number} {quote[0]}{flow_text}{quote[1]}" + (f" {caller}" if caller else "")
    assert parse_command(text) == CallArgs(
        number_text=number, flow_text=flow_text, caller_id_text=caller
    )
