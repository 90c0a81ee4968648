"""Who may talk to ``aeroseg serve``: a secret token, this server's own host names, same-origin writes.

Any web page a user visits can make the browser send requests to ``127.0.0.1``; :class:`GuardMiddleware`
refuses them in one line before the application sees them:

- ``Host`` must name this server (the bound address, a loopback name or address, ``--allowed-host``), so a
  page on a rebound DNS name (``attacker.example`` → 127.0.0.1) gets nothing (HTTP 403);
- every ``/api/`` request carries the token printed in the server's address (``?token=...`` as Jupyter
  prints it, or ``Authorization: Bearer ...``), compared in constant time (HTTP 401);
- a POST or DELETE whose browser says ``Origin`` (or ``Sec-Fetch-Site``) must come from this server's own
  origin (HTTP 403), and a POST must say ``Content-Type: application/json`` (uploads:
  ``application/octet-stream``) with a ``Content-Length`` (HTTP 415, 411, 413 beyond the JSON limit): the
  form and ``text/plain`` POSTs a page may send without asking are refused even if they guessed the token.

The page and its static files need no token (they hold no data), only a right ``Host``. Every answer
carries headers that keep the page out of frames and its token out of ``Referer``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from aeroseg.errors import UserError

if TYPE_CHECKING:  # starlette comes with the serve extra; the CLI imports this module without it
    from starlette.datastructures import Headers

TOKEN_ENV = "AEROSEG_SERVE_TOKEN"  # a fixed token instead of a fresh one at every start
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UPLOAD_PATH = "/api/upload"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,}")


class Refused(UserError):
    """A request this server does not serve for its caller (HTTP 403)."""


def server_token() -> str:
    """:data:`TOKEN_ENV` when set (at least 16 URL-safe characters), else 43 fresh random characters."""
    fixed = os.environ.get(TOKEN_ENV)
    if fixed is None:
        return secrets.token_urlsafe(32)
    if not _TOKEN.fullmatch(fixed):
        raise UserError(f"{TOKEN_ENV} must be at least 16 characters among A-Z a-z 0-9 . _ ~ -")
    return fixed


def exposure_warning(host: str) -> str | None:
    """A warning for a bind address that other machines can reach, None for a loopback one."""
    if _is_loopback(host):
        return None
    return (
        f"aeroseg serve: warning: --host {host or '0.0.0.0'} lets other machines reach this server; anyone "
        "who learns its token can read every image under its folders and run its model, and the traffic "
        "(token included) is not encrypted; keep 127.0.0.1 and put a TLS reverse proxy in front "
        "(docs/serve.md, Security)"
    )


@dataclass(frozen=True)
class Guard:
    """The token and the host names of one server."""

    token: str
    hosts: frozenset[str]  # accepted Host names, lower case, without port
    any_address: bool  # bound to every interface: a Host that is an IP address is accepted too

    @classmethod
    def for_address(cls, host: str, token: str, allowed: Iterable[str] = ()) -> Guard:
        names = {*LOCAL_NAMES, host.lower().strip("[]"), *(a.lower() for a in allowed)}
        wildcard = host in WILDCARDS
        if wildcard:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        return cls(token, frozenset(names), wildcard)

    def host_allowed(self, value: str) -> bool:
        name = _split_host(value)[0]
        if name in self.hosts or _is_loopback(name):
            return True
        return self.any_address and _is_ip(name)

    def token_given(self, headers: Headers, query: bytes) -> str | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        found = parse_qs(query.decode("latin-1")).get("token")
        return found[0] if found else None

    def refusal(self, method: str, path: str, headers: Headers, query: bytes, json_bytes: int):
        """(status, one line) for a request to refuse, None for one to serve."""
        host = headers.get("host", "")
        if not self.host_allowed(host):
            return 403, (
                f"Host {host[:80]!r} is not this server's address; open the address aeroseg serve printed, "
                "or start it with --allowed-host NAME to serve under another name"
            )
        if not path.startswith("/api/"):
            return None
        given = self.token_given(headers, query)
        if given is None:
            return 401, "this server needs its token: open the address aeroseg serve printed (…/?token=…)"
        if not secrets.compare_digest(given.encode("utf-8", "replace"), self.token.encode()):
            return 401, "wrong token: open the address aeroseg serve printed (…/?token=…)"
        if method not in STATE_CHANGING:
            return None
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, host):
            return 403, f"cross-origin request from {origin[:80]!r} refused"
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross-site request refused"
        if method != "POST":
            return None
        wanted = "application/octet-stream" if path == UPLOAD_PATH else "application/json"
        given_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if given_type != wanted:
            return 415, f"{path} takes Content-Type: {wanted}, got {given_type or 'none'!r}"
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            return 411, f"{path} needs a Content-Length"
        if wanted == "application/json" and int(length) > json_bytes:
            return 413, f"a request body is at most {json_bytes // 1024} KiB"
        return None


class GuardMiddleware:
    """ASGI middleware refusing what :meth:`Guard.refusal` refuses and adding :data:`SECURITY_HEADERS`."""

    def __init__(self, app: Any, guard: Guard, json_bytes: int) -> None:
        self.app, self.guard, self.json_bytes = app, guard, json_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        from starlette.datastructures import Headers
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        headers = Headers(scope=scope)
        refusal = self.guard.refusal(
            scope["method"], scope["path"], headers, scope.get("query_string", b""), self.json_bytes
        )
        if refusal is not None:
            status, message = refusal
            extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            await JSONResponse({"error": message}, status, headers=extra)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


class ScrubToken(logging.Filter):
    """Replaces the token in the request log's lines with ``[token]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                re.sub(r"token=[^&\s]*", "token=[token]", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME",
        help="another host name the page may be opened under (a reverse proxy's name); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--allow-presets", action="store_true",
        help="let the page load preset models other than the server's own (they download on first use)",
    )  # fmt: skip


def _split_host(value: str) -> tuple[str, int | None]:
    """(lower-case name, port) of a Host header; ("", None) when malformed."""
    value = value.strip().lower()
    match = re.fullmatch(r"\[([0-9a-f:.]+)\](?::(\d{1,5}))?|([^:\[\]]*)(?::(\d{1,5}))?", value)
    if match is None:
        return "", None
    name = (match.group(1) or match.group(3) or "").rstrip(".")
    port = match.group(2) or match.group(4)
    return name, int(port) if port else None


def _same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` names the host and port of the ``Host`` header (the scheme is not compared:
    behind a TLS proxy the browser's https reaches this server as http)."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default = 443 if parts.scheme == "https" else 80
    name, port = _split_host(host)
    return parts.hostname.rstrip(".") == name and (origin_port or default) == (port or default)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    if name.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False
