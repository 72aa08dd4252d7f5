"""The console's login cookie and its CSRF tokens.

The cookie holds the operator's API key and an expiry, sealed with AES-GCM under the console secret:
the browser cannot read it (HttpOnly), nobody can read or alter it without the secret, and each
page's calls to the admin API present the key itself, so a revoked key ends its sessions at once and
the admin routes check scopes as for any client. CSRF tokens are an HMAC of the cookie under the same
secret, sent back in every form and htmx request; with authentication off there is no cookie, and the
token is the HMAC of a fixed word, which another site can neither read nor compute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:  # cryptography is loaded with the first login (see `ConsoleSessions._cipher`)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE_NAME = "event_ingest_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_PURPOSE = b"event-ingest console session v1"
_NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class Session:
    key: str
    expires_at: float


class ConsoleSessions:
    """Seals and opens login cookies; makes and checks CSRF tokens."""

    def __init__(self, secret: str, ttl_seconds: float) -> None:
        material = secret.encode() if secret else secrets.token_bytes(32)
        self._cipher_key = hashlib.sha256(_PURPOSE + material).digest()
        self._aesgcm: AESGCM | None = None
        self._mac_key = hashlib.sha256(b"csrf:" + material).digest()
        self.ttl_seconds = ttl_seconds

    def _cipher(self) -> AESGCM:
        """The cookie cipher, made on first use: most workers never see a console cookie, and
        cryptography's bindings are several megabytes of an idle worker."""
        if self._aesgcm is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aesgcm = AESGCM(self._cipher_key)
        return self._aesgcm

    def seal(self, key: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        payload = orjson.dumps({"key": key, "expires_at": time.time() + self.ttl_seconds})
        sealed = nonce + self._cipher().encrypt(nonce, payload, _PURPOSE)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, cookie: str | None) -> Session | None:
        """The session in `cookie`; None when missing, altered, sealed under another secret, or expired."""
        if not cookie or len(cookie) > 4096:
            return None
        from cryptography.exceptions import InvalidTag

        try:
            sealed = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            payload = orjson.loads(
                self._cipher().decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _PURPOSE)
            )
            session = Session(key=str(payload["key"]), expires_at=float(payload["expires_at"]))
        except (InvalidTag, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        return session if session.expires_at > time.time() else None

    def csrf_token(self, cookie: str | None) -> str:
        digest = hmac.new(self._mac_key, (cookie or "no session").encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def csrf_valid(self, cookie: str | None, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(cookie), token)
