"""Strict JSON: the cases most parsers let through silently."""

from __future__ import annotations

import json

import pytest
from fastapi import HTTPException

from app.api.json_body import parse_json


def _refusal(body: bytes) -> HTTPException:
    with pytest.raises(HTTPException) as caught:
        parse_json(body)
    return caught.value


def test_plain_json_parses() -> None:
    assert parse_json(b'{"a": [1, {"b": "\xc3\xa9"}]}') == {"a": [1, {"b": "é"}]}


def test_invalid_utf8_is_400_naming_the_byte() -> None:
    error = _refusal(b'{"a": "\xff"}')
    assert error.status_code == 400
    assert "UTF-8" in str(error.detail)
    assert "byte 7" in str(error.detail)


def test_duplicate_key_is_422_naming_the_key() -> None:
    error = _refusal(b'{"quality": 1, "nested": {"x": 1, "x": 2}}')
    assert error.status_code == 422
    assert "duplicate key 'x'" in str(error.detail)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_422(constant: bytes) -> None:
    error = _refusal(b'{"score": ' + constant + b"}")
    assert error.status_code == 422


def test_runaway_nesting_is_400() -> None:
    error = _refusal(b"[" * 100_000 + b"]" * 100_000)
    assert error.status_code == 400
    assert "too deeply" in str(error.detail)


def test_malformed_json_raises_the_decode_error_fastapi_answers_422() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json(b'{"a": ')


def test_a_byte_order_mark_is_the_decode_error_json_loads_gives() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        parse_json(b'\xef\xbb\xbf{"a": 1}')
    assert "BOM" in str(caught.value)


def test_the_shared_decoder_is_whole_again_after_a_refusal() -> None:
    """One decoder serves every body: a refusal half-way through one leaves nothing behind."""
    for body in (b'{"x": 1, "x": 2}', b'{"a": NaN}', b'{"a": '):
        with pytest.raises((HTTPException, json.JSONDecodeError)):
            parse_json(body)
        assert parse_json(b'{"x": {"x": 1}, "y": [1.5]}') == {"x": {"x": 1}, "y": [1.5]}
