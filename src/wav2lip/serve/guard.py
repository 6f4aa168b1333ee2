"""Only this server's own names and pages may use it: the Host and Origin checks of a local dev server.

DNS rebinding: a foreign site whose name is made to resolve to 127.0.0.1 can, through the browser, read
and delete this server's jobs as if they were its own; its requests still carry the foreign name in
`Host`, so a Host that is not one of this server's names is refused. A page of another site may also
send a form POST or open a WebSocket here (the browser holds neither back); those carry `Origin`,
refused unless it is this server's own. Clients that are not browsers send no Origin and pass.

Behind a reverse proxy the browser names the proxy: `--allow-host NAME` adds such a name, accepted on
any port (the proxy's own), with an Origin of that name and port by http or https (the proxy may end TLS).
"""
from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
DRAIN_BYTES = 64 * 2**20  # read at most this much of a refused body, so the client sees the answer
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _address(host: str) -> tuple[str, int | None] | None:
    """'name:port' -> (name in lower case, port or None); None when it is not a host at all."""
    try:
        parts = urlsplit("//" + host)
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username is not None:
        return None
    return parts.hostname, port


def host_name(text: str) -> str | None:
    """`text` as a bare host name (no port, scheme or path), in lower case; None if it is not one."""
    address = _address(text)
    if address is None or address[1] is not None or text.endswith(":") or any(c.isspace() for c in text):
        return None
    return address[0]


def _origin(origin: str) -> tuple[str, str, int] | None:
    """'scheme://name:port' -> (scheme, name in lower case, port, the scheme's own if not given); None for
    'null' (a sandboxed page, a file) and anything else that is not an http(s) origin."""
    scheme, _, rest = origin.partition("://")
    address = _address(rest) if scheme in ("http", "https") else None
    return None if address is None else (scheme, address[0], address[1] or _DEFAULT_PORTS[scheme])


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostGuard:
    """ASGI middleware: 403 with a JSON reason for a Host that is not a name of this server (the
    loopback names, the `--host` given; any IP address when bound to all of them) on its own port, or
    an `allow`ed name on any port, or for an Origin other than the server's own."""

    def __init__(self, app, host: str = "127.0.0.1", allow: tuple[str, ...] = ()) -> None:
        self.app = app
        self.names = {name.lower() for name in (*LOOPBACK_NAMES, host.strip("[]"))}
        self.proxied = {name.strip("[]").lower() for name in allow}
        # Bound to every address (0.0.0.0, ::): reached by any of the machine's IPs, never by a foreign name.
        self.any_ip = _is_ip(host.strip("[]")) and ipaddress.ip_address(host.strip("[]")).is_unspecified

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            reason = self.refusal(scope)
            if reason is not None:
                await self._refuse(scope, receive, send, reason)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope) -> str | None:
        """Why this request may not come in, or None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host, origin = headers.get("host"), headers.get("origin")
        if host is None:  # not a browser's request (HTTP/1.0): nothing to check it against
            return None if origin is None else "a request with an Origin needs a Host header"
        secure = scope.get("scheme") in ("https", "wss")
        address = _address(host)
        if address is None:
            return f"Host {host[:80]!r} is not a host name"
        name, port = address[0], address[1] or (443 if secure else 80)
        if name in self.proxied:  # the proxy's port, and its scheme: the Origin must name the same place
            seen = _origin(origin) if origin is not None else None
            if origin is not None and (seen is None or seen[1:] != (name, address[1] or _DEFAULT_PORTS[seen[0]])):
                return (f"a page of another site (Origin {origin[:80]!r}) may not use this server; "
                        "open its own page, or send no Origin")
            return None
        server = scope.get("server") or ()
        own_port = server[1] if len(server) > 1 else None
        if not (name in self.names or self.any_ip and _is_ip(name)) or own_port not in (None, port):
            names = sorted(self.names - {"0.0.0.0", "::"}) + (["any of this machine's IP addresses"] if self.any_ip else [])
            where = f" on port {own_port}" if own_port is not None else ""
            return (f"Host {host[:80]!r} is not this server's address ({', '.join(names)}{where}); "
                    "start it with --allow-host NAME to be reached by that name (behind a proxy, say)")
        if origin is not None and _origin(origin) != ("https" if secure else "http", name, port):
            return (f"a page of another site (Origin {origin[:80]!r}) may not use this server; "
                    "open its own page, or send no Origin")
        return None

    @staticmethod
    async def _refuse(scope, receive, send, reason: str) -> None:
        body = json.dumps({"detail": reason}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if scope["type"] == "http":
            read, more = 0, True
            while more and read <= DRAIN_BYTES:  # read the body first: the client sees the answer, not a broken pipe
                message = await receive()
                read += len(message.get("body", b""))
                more = message["type"] == "http.request" and message.get("more_body", False)
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions") or {}:
            await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # a server without the denial response: a close before the accept is a plain 403
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
