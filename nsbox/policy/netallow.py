"""Network allowlist: which names and addresses the filtering proxy may reach. Pure.

An entry is a host name (`pypi.org`), a wildcard for its sub-domains at any
depth (`*.example.org`, which does not match `example.org` itself), an IP
address literal, or a host name pinned to an address (`registry.internal=10.1.2.3`).
A raw IP address is only reachable when listed. An exact or pinned name may
resolve to any address (gateways, split-horizon DNS, internal mirrors); a name
matched only by a wildcard that resolves to a loopback, private or link-local
address is refused unless that address is listed: a wildcard must not open the
host's own services.
"""

import ipaddress

from nsbox.record import Record

PROXY_PORT = 3128  # on the sandbox's own loopback
NOT_LISTED = "not in allowlist"
RAW_IP = "raw IP address not in allowlist"
# Most entries kept in a run's report; the total is counted beyond that.
MAX_REPORTED = 200

_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


class Refusal(Record):
    """One request the proxy refused."""

    method: str  # CONNECT | GET | POST | ... | SOCKS
    host: str
    port: int
    reason: str

    def describe(self) -> str:
        return f"{self.method} {format_hostport(self.host, self.port)} ({self.reason})"

    def as_dict(self) -> dict:
        return {"method": self.method, "host": self.host, "port": self.port,
                "reason": self.reason}


def stderr_line(refusal: Refusal) -> str:
    return f"nsbox: network: blocked {refusal.describe()}\n"


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize(name: str) -> str:
    """Lower case, no trailing dot, IPv6 brackets dropped."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name


def ip_literal(name: str):
    """The ipaddress object if `name` is an IP literal, else None."""
    try:
        return ipaddress.ip_address(normalize(name))
    except ValueError:
        return None


def check_entries(entries) -> tuple:
    """Normalized entries, or ValueError naming the bad one."""
    checked = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"network allow entries must be strings, not {entry!r}")
        name, eq, pin = entry.partition("=")
        name = normalize(name)
        if eq:
            pinned = ip_literal(pin)
            ok = pinned is not None and ip_literal(name) is None and _valid_pattern(name) \
                and not name.startswith("*.")
            name = f"{name}={pinned}"
        else:
            ok = ip_literal(name) is not None or _valid_pattern(name)
        if not ok:
            raise ValueError(
                f"bad network allow entry {entry!r}: expected a host name (pypi.org), "
                "a wildcard for its sub-domains (*.example.org), an IP address, "
                "or a host name pinned to an address (registry.internal=10.1.2.3)")
        if name not in checked:
            checked.append(name)
    return tuple(checked)


def _valid_pattern(name: str) -> bool:
    if name.startswith("*."):
        name = name[2:]
    labels = name.split(".")
    return bool(name) and len(name) <= 253 and all(
        label and len(label) <= 63 and set(label) <= _LABEL_CHARS
        and not label.startswith("-") and not label.endswith("-") for label in labels)


def name_allowed(host: str, allow: tuple) -> bool:
    host = normalize(host)
    for entry in allow:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
    return exactly_listed(host, allow)


def exactly_listed(host: str, allow: tuple) -> bool:
    """True if `host` is listed by name (plain or pinned), not only through a wildcard."""
    host = normalize(host)
    return ip_literal(host) is None and any(
        entry.partition("=")[0] == host for entry in allow if not entry.startswith("*."))


def pinned_address(host: str, allow: tuple):
    """The address a `name=address` entry pins `host` to, or None."""
    host = normalize(host)
    for entry in allow:
        name, eq, address = entry.partition("=")
        if eq and name == host:
            return address
    return None


def refusal_reason(host: str, allow: tuple) -> str | None:
    """Why a request to `host` is refused before any resolution, or None if it may go on."""
    address = ip_literal(host)
    if address is not None:
        return None if _address_listed(address, allow) else RAW_IP
    return None if name_allowed(host, allow) else NOT_LISTED


def address_refusal(address: str, allow: tuple, host: str = "") -> str | None:
    """Why connecting to `address`, resolved from `host`, is refused, or None.

    A public address is fine, and any address for an exactly listed name; a
    loopback, private, link-local or otherwise non-global one otherwise only
    when listed itself.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    if ip.is_global or _address_listed(ip, allow) or (host and exactly_listed(host, allow)):
        return None
    return f"resolves to non-public address {ip}"


def _address_listed(address, allow: tuple) -> bool:
    for entry in allow:
        listed = ip_literal(entry)
        if listed is not None and listed == address:
            return True
    return False


def proxy_env(port: int = PROXY_PORT) -> dict:
    """The variables that point HTTP clients at the in-sandbox forwarder."""
    http = f"http://127.0.0.1:{port}"
    # socks5h: the proxy resolves names, since the sandbox has no DNS.
    socks = f"socks5h://127.0.0.1:{port}"
    env = {}
    for name, value in (("HTTP_PROXY", http), ("HTTPS_PROXY", http), ("ALL_PROXY", socks),
                        ("NO_PROXY", "localhost,127.0.0.1")):
        env[name] = value
        env[name.lower()] = value
    return env


def parse_test_resolve(text: str) -> tuple:
    """NSBOX_TEST_RESOLVE: "name[:port]=ip:port,..." -> ((name, port or 0, ip, port), ...).

    Test use only: lets tests map names to local servers without DNS.
    """
    mapping = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, target = item.partition("=")
        ip, colon, port = target.rpartition(":")
        name, _, key_port = key.partition(":")
        if not eq or not colon or not port.isdigit() or ip_literal(ip) is None \
                or (key_port and not key_port.isdigit()):
            raise ValueError(f"NSBOX_TEST_RESOLVE: expected name[:port]=ip:port, got {item!r}")
        mapping.append((normalize(name), int(key_port or 0), normalize(ip), int(port)))
    return tuple(mapping)


def resolve_override(mapping: tuple, host: str, port: int):
    """(ip, port) from a test mapping for host:port, or None."""
    host = normalize(host)
    fallback = None
    for name, key_port, ip, target_port in mapping:
        if name == host and key_port == port:
            return ip, target_port
        if name == host and key_port == 0:
            fallback = (ip, target_port)
    return fallback


class ProxySettings(Record):
    """What the proxy of one run needs: computed before fork, handed to its process."""

    allow: tuple  # checked entries (see check_entries)
    port: int = PROXY_PORT
    overrides: tuple = ()  # parse_test_resolve(...): test use only
