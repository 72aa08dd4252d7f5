"""The console's calls to the service's own admin API, in process.

Every console action is a request to the same route a curl user would call, with the operator's key
in `Authorization`: the same validation, scope checks, audit trail and answers, and no second code
path to keep in step. The call goes through the app's whole middleware stack without a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp

# Routes such as a DLQ replay or a topic listing may wait for Kafka.
CALL_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        """The admin API's error message (`detail`), each invalid field on a line of its own."""
        if isinstance(self.body, dict):
            detail = self.body.get("detail")
            if isinstance(detail, list):  # invalid fields: {"field", "message", "type"} each
                return "\n".join(
                    f"{item.get('field', 'body')}: {item.get('message')}"
                    for item in detail
                    if isinstance(item, dict)
                )
            problems = self.body.get("problems")
            if isinstance(problems, list) and problems:
                return f"{detail}\n" + "\n".join(f"- {problem}" for problem in problems)
            if detail is not None:
                return str(detail)
        return f"HTTP {self.status}"


class AdminApi:
    """The admin API of `app`, called with `key` (None: no key, as with AUTH_ENABLED=false)."""

    def __init__(self, app: ASGIApp, key: str | None, request_id: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if request_id:
            headers["X-Request-ID"] = request_id  # the console's request and its calls share one id in logs
        self._app = app
        self._headers = headers

    async def call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Answer:
        clean = {name: value for name, value in (params or {}).items() if value not in (None, "")}
        import httpx  # loaded with the console's first call: a worker that serves none never needs it

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._app, client=("127.0.0.1", 0)),
            base_url="http://console.internal",
            headers=self._headers,
            timeout=CALL_TIMEOUT_SECONDS,
        ) as client:
            response = await client.request(method, path, json=json, params=clean or None)
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        return Answer(response.status_code, body)

    async def get(self, path: str, **params: Any) -> Answer:
        return await self.call("GET", path, params=params)
