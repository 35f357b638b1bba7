"""Who may use the dashboard, and which requests may change something.

One secret, read from an environment variable at start and never logged, opens it: as
the password of HTTP basic auth (any user name; what a browser asks for) or as a bearer
token. Without the secret the dashboard is served only on a loopback address. Actions
(requeue, delete) are refused unless enabled, and need the session's CSRF token in the
X-CSRF-Token header, a JSON body, and no Origin header of another site."""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from dataclasses import dataclass, field

from starlette.requests import Request

from resc.core.errors import RescError

DEFAULT_PASSWORD_ENV = "RESC_DASHBOARD_PASSWORD"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
CSRF_HEADER = "x-csrf-token"


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


@dataclass(frozen=True)
class Access:
    """The secret (None: none needed), whether actions are enabled, the CSRF token."""

    secret: bytes | None
    actions: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def from_environment(cls, variable: str, actions: bool, host: str) -> Access:
        """RescError when the variable is unset on an address other than loopback."""
        value = os.environ.get(variable, "")
        if not value and host not in LOOPBACK:
            raise RescError(
                f"the dashboard on {host} needs a password: set the environment variable "
                f"{variable} (it is served without one only on a loopback address)"
            )
        return cls(value.encode() if value else None, actions)

    def check_reader(self, request: Request) -> None:
        """Refused (401) unless the request carries the secret, when there is one."""
        if self.secret is None:
            return
        given = _credential(request.headers.get("authorization", ""))
        # Compared even when nothing was given, so timing says nothing.
        if not hmac.compare_digest(given or b"", self.secret) or given is None:
            raise Refused(
                401,
                "the dashboard needs its password (basic auth) or token (bearer)",
                {"WWW-Authenticate": 'Basic realm="resc dashboard", charset="UTF-8"'},
            )

    def check_action(self, request: Request) -> None:
        """Refused unless actions are enabled and the request is this session's own."""
        self.check_reader(request)
        if not self.actions:
            raise Refused(403, "actions are disabled: start resc with --dashboard-actions")
        token = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.csrf.encode()):
            raise Refused(403, "the CSRF token is missing or wrong: reload the page")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise Refused(415, "actions take a JSON body (Content-Type: application/json)")
        origin = request.headers.get("origin")
        if origin is not None and origin != _own_origin(request):
            raise Refused(403, f"a request from another origin ({origin}) is refused")


def _credential(header: str) -> bytes | None:
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value.encode()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


def _own_origin(request: Request) -> str:
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}"
