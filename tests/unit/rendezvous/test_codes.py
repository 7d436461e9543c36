"""The word list and the code format (rendezvous/words.py, codes.py)."""

from __future__ import annotations

import pytest

from p2pcp.core.errors import UsageError
from p2pcp.rendezvous.codes import (
    MAX_NAMEPLATE,
    Code,
    looks_like_code,
    new_code,
    parse_code,
    parse_words,
)
from p2pcp.rendezvous.words import WORD_INDEX, WORDS


def test_the_word_list_is_256_distinct_short_lowercase_words_none_a_prefix_of_another() -> None:
    assert len(WORDS) == 256
    assert len(set(WORDS)) == 256
    for word in WORDS:
        assert word.isascii() and word.isalpha() and word.islower(), word
        assert 3 <= len(word) <= 8, word
    prefixes = [(a, b) for a in WORDS for b in WORDS if a != b and b.startswith(a)]
    assert prefixes == []
    assert all(WORDS[WORD_INDEX[word]] == word for word in WORDS)


def test_a_code_is_written_and_read_back() -> None:
    code = Code(7, ("crossbow", "puzzle"))
    assert str(code) == "7-crossbow-puzzle"
    assert parse_code("7-crossbow-puzzle") == code
    # People type it in any case, with spaces, with blanks around it.
    assert parse_code("  7 Crossbow  PUZZLE\n") == code
    assert parse_code("7--crossbow-puzzle") == code


def test_a_new_code_has_the_words_asked_for_from_the_list() -> None:
    for count in range(2, 9):
        code = new_code(12, count)
        assert code.nameplate == 12 and len(code.words) == count
        assert all(word in WORD_INDEX for word in code.words)
        assert parse_code(str(code)) == code
    # Random: 50 fresh two-word codes are not all the same.
    assert len({new_code(1, 2) for _ in range(50)}) > 1


@pytest.mark.parametrize("count", [0, 1, 9, 100])
def test_word_counts_outside_2_to_8_are_usage_errors(count: int) -> None:
    with pytest.raises(UsageError, match="2 to 8 words"):
        new_code(1, count)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "starts with its number"),
        ("crossbow-puzzle", "starts with its number"),
        ("7", "words after the number are missing"),
        ("7-", "words after the number are missing"),
        ("7-crossbow", "1 words"),
        ("0-crossbow-puzzle", "out of range"),
        (f"{MAX_NAMEPLATE + 1}-crossbow-puzzle", "out of range"),
        ("7-crossbow-puzzel", "word 2 is not one of"),
        ("٣-crossbow-puzzle", "starts with its number"),
        ("7-" + "-".join(["apple"] * 9), "9 words"),
    ],
)
def test_malformed_codes_are_usage_errors_that_never_echo_the_words(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match) as caught:
        parse_code(text)
    assert caught.value.exit_code == 2
    assert "puzzel" not in str(caught.value)


def test_words_alone_parse_for_a_chosen_code() -> None:
    assert parse_words("crossbow-puzzle") == ("crossbow", "puzzle")
    with pytest.raises(UsageError):
        parse_words("crossbow")


def test_codes_and_tickets_are_told_apart() -> None:
    assert looks_like_code("7-crossbow-puzzle")
    assert looks_like_code(" 12-apple-banjo")
    assert not looks_like_code("p2pcp1abcdef")
    assert not looks_like_code("")


def test_the_repr_of_a_code_hides_its_words() -> None:
    code = Code(7, ("crossbow", "puzzle"))
    assert "crossbow" not in repr(code) and "7" in repr(code)
