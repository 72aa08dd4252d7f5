"""Strict JSON parsing of request bodies: UTF-8 only, no duplicate keys, no NaN, bounded nesting.

Most JSON parsers keep the last of two equal keys without a word, so `{"quality": 1, "quality": 5}`
would be read differently by different consumers; the service refuses it instead (422).
The standard library's parser is used because it is the only fast one with a hook per object.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException


class DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return result


class NonStandardNumberError(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise NonStandardNumberError(name)


# One decoder for every body: `json.loads` with hooks builds a new one (and its scanner) per call,
# as long again as decoding a single event.
_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)


def parse_json(body: bytes) -> Any:
    """The body as Python data; 400 for invalid UTF-8 or runaway nesting, 422 for a duplicate key.

    Malformed JSON raises json.JSONDecodeError, which FastAPI answers as a 422 `json_invalid`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except DuplicateKeyError as exc:
        raise HTTPException(
            422,
            [
                {
                    "field": "(body)",
                    "message": f"duplicate key {exc.key!r} in a JSON object",
                    "type": "duplicate_key",
                }
            ],
        ) from None
    except NonStandardNumberError as exc:
        raise HTTPException(
            422,
            [{"field": "(body)", "message": f"{exc} is not a JSON number", "type": "json_invalid"}],
        ) from None
    except RecursionError:
        raise HTTPException(400, "request body nests JSON too deeply") from None
