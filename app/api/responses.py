"""A JSON response rendered with orjson (FastAPI's own ORJSONResponse is deprecated)."""

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JsonResponse(JSONResponse):
    """`application/json` rendered by orjson: UUIDs and datetimes serialize natively.

    A JSONResponse subclass so that FastAPI documents the response models in the OpenAPI schema
    (for any other response class it documents the body as a bare string).
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
