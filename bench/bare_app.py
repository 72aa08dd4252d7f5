"""The HTTP stack's ceiling: a FastAPI endpoint that reads the body and answers 202, nothing else.

Served by the same uvicorn with the same worker count as the service, so the ratio of our
figures to these says what validation, routing and publishing cost.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/v1/events/{kind}")
async def accept(kind: str, request: Request) -> Response:
    await request.body()
    return Response(b'{"status":"accepted"}', status_code=202, media_type="application/json")
