"""Proxy protocol messages as data: HTTP request heads, SOCKS5 replies. No I/O."""

import struct

MAX_HEAD = 64 * 1024
# Hop-by-hop and proxy-only headers, not passed to the origin server.
_DROPPED_HEADERS = {"proxy-connection", "proxy-authorization", "connection", "keep-alive",
                    "te", "trailer", "upgrade"}

SOCKS_VERSION = 5
SOCKS_OK = 0
SOCKS_FAILURE = 1
SOCKS_NOT_ALLOWED = 2  # "connection not allowed by ruleset"
SOCKS_NET_UNREACHABLE = 3
SOCKS_HOST_UNREACHABLE = 4
SOCKS_REFUSED = 5
SOCKS_TTL_EXPIRED = 6
SOCKS_BAD_COMMAND = 7
SOCKS_BAD_ADDRESS = 8
SOCKS_CONNECT = 1
SOCKS_NO_AUTH = 0
SOCKS_NO_METHOD = 0xFF


class BadRequest(ValueError):
    """A request the proxy cannot understand (answered with 400)."""


class Request:
    """One parsed HTTP proxy request head."""

    __slots__ = ("method", "host", "port", "path", "version", "headers")

    def __init__(self, method, host, port, path, version, headers):
        self.method, self.host, self.port = method, host, port
        self.path, self.version, self.headers = path, version, headers


def split_hostport(text: str, default_port: int):
    """"host[:port]" or "[v6]:port" -> (host, port); BadRequest if malformed."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadRequest(f"bad address {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise BadRequest(f"bad address {text!r}")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            host, port_text = text, ""
    if not host:
        raise BadRequest(f"no host in {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadRequest(f"bad port in {text!r}")
    return host, int(port_text)


def parse_head(head: bytes) -> Request:
    """The request line and headers (without the final blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:
        raise BadRequest("request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(f"bad request line {lines[0][:200]!r}")
    method, target, version = parts
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(f"bad header line {line[:200]!r}")
        headers.append((name, value.strip()))
    if method == "CONNECT":
        host, port = split_hostport(target, 443)
        return Request(method, host, port, "", version, headers)
    if not target.lower().startswith("http://"):
        raise BadRequest("the proxy takes absolute http:// URLs; use CONNECT for https")
    rest = target[len("http://"):]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise BadRequest("credentials in proxy URLs are not supported")
    host, port = split_hostport(authority, 80)
    if not path.startswith("/"):
        path = "/" + path
    return Request(method, host, port, path.split("#", 1)[0], version, headers)


def origin_head(request: Request) -> bytes:
    """The head sent to the origin server: origin-form target, one request per connection."""
    lines = [f"{request.method} {request.path} {request.version}"]
    has_host = False
    for name, value in request.headers:
        lower = name.lower()
        if lower in _DROPPED_HEADERS:
            continue
        has_host = has_host or lower == "host"
        lines.append(f"{name}: {value}")
    if not has_host:
        default = 80
        authority = request.host if request.port == default else f"{request.host}:{request.port}"
        lines.append(f"Host: {authority}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_response(status: int, reason: str, body: str, proxy_status: str = "") -> bytes:
    """A complete short response from the proxy itself (RFC 9209 Proxy-Status when given)."""
    data = body.encode()
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(data)}", "Connection: close"]
    if proxy_status:
        lines.append(f"Proxy-Status: nsbox; {proxy_status}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def socks_reply(code: int) -> bytes:
    """A SOCKS5 reply with an unspecified bound address (clients ignore it)."""
    return struct.pack("!BBBB4sH", SOCKS_VERSION, code, 0, 1, b"\0\0\0\0", 0)
