"""Identifier rules: non-empty str, at most 512 UTF-8 bytes, no C0 controls or DEL."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore_wfp import InvalidArgumentError, InvalidIdentifierError
from objstore_wfp.ids import MAX_ID_BYTES, validate_id
from objstore_wfp.testing._identifiers import ILLEGAL_IDS, LEGAL_IDS


@pytest.mark.parametrize("value", LEGAL_IDS)
def test_legal_ids_are_returned_unchanged(value: str) -> None:
    assert validate_id(value, "instance_id") is value


@pytest.mark.parametrize("value", ILLEGAL_IDS, ids=repr)
def test_illegal_ids_are_refused(value: object) -> None:
    with pytest.raises(InvalidIdentifierError, match=r"^task_id "):
        validate_id(value, "task_id")


@pytest.mark.parametrize("code", [*range(0x20), 0x7F])
def test_every_control_character_is_refused(code: int) -> None:
    with pytest.raises(InvalidIdentifierError, match=f"U\\+{code:04X} at index 2"):
        validate_id(f"ab{chr(code)}cd")


@pytest.mark.parametrize("code", [0x20, 0x7E, 0x80, 0x9F, 0xA0, 0x2028, 0xFEFF, 0x10FFFF])
def test_other_characters_are_legal(code: int) -> None:
    assert validate_id(f"a{chr(code)}b") == f"a{chr(code)}b"


def test_length_counts_utf8_bytes() -> None:
    assert MAX_ID_BYTES == 512
    for unit in ("x", "é", "中", "😀"):  # 1, 2, 3 and 4 bytes
        fits = unit * (512 // len(unit.encode()))
        assert validate_id(fits) == fits
        with pytest.raises(InvalidIdentifierError, match="UTF-8 bytes"):
            validate_id(fits + unit)


def test_error_family() -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        validate_id("")
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidArgumentError)
    with pytest.raises(InvalidIdentifierError, match="must be a str, not NoneType"):
        validate_id(None)
    with pytest.raises(InvalidIdentifierError, match="not valid Unicode"):
        validate_id("a\ud800")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=200))
def test_validation_agrees_with_the_rule(value: str) -> None:
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        legal = False
    else:
        legal = 0 < len(encoded) <= 512 and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    if legal:
        assert validate_id(value) == value
    else:
        with pytest.raises(InvalidIdentifierError):
            validate_id(value)
