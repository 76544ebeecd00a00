"""Credentials of the prediction service: API keys for predictions, a bearer token for admin.

Keys are compared in constant time. A missing credential is 401 (with a
``WWW-Authenticate`` header), a wrong one 403; both are logged with the
client address and path, never the credential. With no keys configured the
prediction endpoints refuse every request (401) and say which setting to
set: a service that answers anyone because nobody configured it is the
insecure default this avoids.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from fastapi import HTTPException, Request

from retailml.core.settings import Settings

logger = logging.getLogger("retailml.serving.auth")

API_KEY_HEADER = "X-API-Key"


class Credentials:
    """The accepted API keys and admin token, and the checks of a request against them."""

    def __init__(self, settings: Settings, on_failure: object = None) -> None:
        self._keys: tuple[bytes, ...] = tuple(
            k.get_secret_value().encode() for k in settings.api_keys if k.get_secret_value()
        )
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        self._admin: bytes = token.encode()
        self._on_failure = on_failure

    @staticmethod
    def _match(given: str, accepted: Sequence[bytes]) -> bool:
        raw = given.encode()
        found = False
        for key in accepted:  # compare with every key: the time does not tell which matched
            found |= hmac.compare_digest(raw, key)
        return found

    def _fail(self, request: Request, kind: str, status: int, detail: str) -> HTTPException:
        client = request.client.host if request.client else "?"
        logger.warning(
            "refused %s %s from %s: %s credential %s",
            request.method,
            request.url.path,
            client,
            kind,
            "missing" if status == 401 else "wrong",
        )
        if callable(self._on_failure):
            self._on_failure(kind, status)
        headers = {"WWW-Authenticate": "ApiKey" if kind == "api_key" else "Bearer"}
        return HTTPException(status, detail, headers=headers)

    async def require_api_key(self, request: Request) -> None:
        """Raise 401/403 unless the request carries an accepted X-API-Key (async: no thread hop)."""
        given = request.headers.get(API_KEY_HEADER)
        if not self._keys:
            raise self._fail(
                request,
                "api_key",
                401,
                "prediction API keys are not configured on this server; "
                "set RETAILML_API_KEYS (comma-separated) and send one in the X-API-Key header",
            )
        if not given:
            raise self._fail(
                request, "api_key", 401, "missing API key: send it in the X-API-Key header"
            )
        if not self._match(given, self._keys):
            raise self._fail(request, "api_key", 403, "invalid API key (X-API-Key)")

    async def require_admin(self, request: Request) -> None:
        """Raise 401/403 unless the request carries the admin bearer token."""
        header = request.headers.get("Authorization", "")
        if not self._admin:
            raise self._fail(
                request,
                "admin_token",
                401,
                "admin endpoints are disabled: set RETAILML_ADMIN_TOKEN and send "
                "'Authorization: Bearer <token>'",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._fail(
                request,
                "admin_token",
                401,
                "missing admin token: send 'Authorization: Bearer <RETAILML_ADMIN_TOKEN>'",
            )
        if not self._match(token.strip(), (self._admin,)):
            raise self._fail(request, "admin_token", 403, "invalid admin token")
