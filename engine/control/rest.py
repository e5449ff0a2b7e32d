"""Twilio's REST API on ``httpx.AsyncClient`` under trio: auth, form encoding, errors, retries.

Retries happen only where they are safe: on 429 and 503 (Twilio did not act on the request),
after ``Retry-After`` or a capped exponential backoff; and on connection failures that happened
before the request was sent. A POST whose response was lost (read timeout, dropped connection)
is never sent again — Twilio may already have placed the call or sent the message.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx
import trio

from engine.control.credentials import Credentials
from engine.control.validation import rest_path
from engine.errors import TwilioAPIError
from engine.metrics import REST_ERRORS

__all__ = ["DEFAULT_BASE_URL", "Credentials", "FormValue", "TwilioClient"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"
FormValue = str | Sequence[str]
"""A form field's value; a sequence is sent as repeated fields."""


class TwilioClient:
    """An async Twilio REST client; use as ``async with TwilioClient(credentials) as client``."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        base_url: str | None = None,
        timeout: float = 15.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
    ) -> None:
        self.credentials = credentials
        self.base_url = (
            base_url or os.environ.get("TWILIO_API_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=(credentials.username, credentials.auth_token),
            timeout=timeout,
            headers={"User-Agent": "voice-engine", "Accept": "application/json"},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def account_path(self, path: str) -> str:
        """``Calls.json`` → ``/2010-04-01/Accounts/AC…/Calls.json``; absolute paths stay as is.

        Raises :class:`~engine.errors.InvalidInput` for anything but a path on the API's host
        (a URL, ``//host/…``): the connection's credentials go nowhere else.
        """
        path = rest_path(path)
        if path.startswith("/"):
            return path
        return f"/{API_VERSION}/Accounts/{self.credentials.account_sid}/{path}"

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, FormValue] | None = None,
        *,
        json_body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send one request (form-encoded for POST, query for GET) and return Twilio's JSON.

        ``path`` is relative to the account (``Calls.json``) or absolute (``/2010-04-01/…``).
        ``json_body`` sends a JSON object as the body instead (for endpoints that take JSON);
        ``params`` then go in the query. Raises :class:`~engine.errors.TwilioAPIError` on an
        error response.
        """
        try:
            return await self._request(method.upper(), self.account_path(path), params, json_body)
        except TwilioAPIError as exc:
            REST_ERRORS.labels(str(exc.code), str(exc.status)).inc()
            raise

    async def _request(
        self,
        method: str,
        url: str,
        params: Mapping[str, FormValue] | None,
        json_body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        fields = {k: (list(v) if not isinstance(v, str) else v) for k, v in (params or {}).items()}
        attempt = 0
        while True:
            try:
                if json_body is not None:
                    response = await self._http.request(
                        method, url, params=fields, json=dict(json_body)
                    )
                elif method in ("POST", "PUT", "PATCH"):
                    response = await self._http.request(method, url, data=fields)
                else:
                    response = await self._http.request(method, url, params=fields)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Not sent: safe to try again whatever the method.
                if attempt >= self.max_retries:
                    raise TwilioAPIError(
                        0, f"cannot reach {self.base_url}: {exc}", status=0
                    ) from exc
                await self._sleep(attempt, None)
                attempt += 1
                continue
            except httpx.TransportError as exc:
                if method != "GET" or attempt >= self.max_retries:
                    # The request may have reached Twilio: resending could act twice.
                    raise TwilioAPIError(
                        0,
                        f"{method} {url}: no response ({type(exc).__name__}); not retried",
                        status=0,
                    ) from exc
                await self._sleep(attempt, None)
                attempt += 1
                continue
            if response.status_code in (429, 503) and attempt < self.max_retries:
                status = str(response.status_code)
                REST_ERRORS.labels(status, status).inc()
                await self._sleep(attempt, response.headers.get("Retry-After"))
                attempt += 1
                continue
            return self._result(response)

    async def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
        if retry_after is not None and retry_after.replace(".", "", 1).isdigit():
            delay = min(self.max_backoff * 4, float(retry_after))
        log.info("Twilio API busy; retrying in %.2f s", delay)
        await trio.sleep(delay)

    @staticmethod
    def _result(response: httpx.Response) -> dict[str, Any]:
        if response.status_code == 204:
            return {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        if response.is_success:
            raise TwilioAPIError(
                response.status_code,
                f"unexpected response body: {response.text[:200]!r}",
                status=response.status_code,
            )
        if not isinstance(body, dict):
            raise TwilioAPIError(
                response.status_code,
                response.text[:200] or response.reason_phrase,
                status=response.status_code,
            )
        code = body.get("code")
        return_code = code if isinstance(code, int) else response.status_code
        raise TwilioAPIError(
            return_code,
            str(body.get("message") or body.get("detail") or body.get("title") or ""),
            status=int(body.get("status") or response.status_code),
            more_info=body.get("more_info"),
            details=body.get("details"),
        )
