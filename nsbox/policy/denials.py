"""Denial events: what a wall stopped, in one record per distinct operation.

Every wall reports in these terms (the filesystem supervisor, the seccomp profile, the
network allowlist proxy, resource limits), so the CLI's summary line, `--json-status`
and `Result.denials` say the same thing.
"""

from ..record import Record

WALLS = ("filesystem", "hidden", "seccomp", "network", "limit", "signal")

# A command that hammers one target still yields one event (with a count); one that
# hits many distinct targets keeps the first MAX_EVENTS and counts the rest.
MAX_EVENTS = 256

# The sandbox's own /run (full isolation), under both of its names.
PRIVATE_RUN = ("/run", "/var/run")
# Rules of connect(2) events (plan/denial_rules.py classify_connect), matched by hints.
NOT_IN_PRIVATE_RUN = "the sandbox's own /run: the host's sockets are not in it"
NETWORK_CLOSED = "network none"
DIRECT = "a direct connection: the allowlist is reached only through its proxy"


class Denial(Record):
    """One blocked operation, counted when repeated.

    wall: which wall stopped it (WALLS); operation: write, create, delete, rename, read,
    connect, the syscall's name...; target: the path as resolved in the sandbox, host:port,
    or the syscall; rule: why, in words a user can act on ("outside the writable roots",
    "protected path .git/hooks", "hidden path", "seccomp profile rule", "not on the
    allowlist", "limit memory=512M"); pid and command: the first process that tried.
    """

    wall: str
    operation: str
    target: str
    rule: str
    pid: int = 0
    command: str = ""
    count: int = 1

    def key(self) -> tuple:
        return (self.wall, self.operation, self.target, self.rule)

    def describe(self) -> str:
        times = f" ({self.count}×)" if self.count > 1 else ""
        return f"{self.operation} {self.target} ({self.rule}){times}"

    def as_dict(self) -> dict:
        return {"wall": self.wall, "operation": self.operation, "target": self.target,
                "rule": self.rule, "pid": self.pid, "command": self.command,
                "count": self.count}


def from_dict(data: dict) -> Denial:
    return Denial(str(data["wall"]), str(data["operation"]), str(data["target"]),
                  str(data["rule"]), int(data.get("pid", 0)), str(data.get("command", "")),
                  int(data.get("count", 1)))


class DenialLog:
    """Deduplicating, bounded collector: one entry per (wall, operation, target, rule)."""

    __slots__ = ("_events", "dropped")

    def __init__(self):
        self._events: dict = {}
        self.dropped = 0  # distinct events past MAX_EVENTS, counted but not kept

    def add(self, denial: Denial) -> bool:
        """Record `denial`; True when it is new (not a repeat of a kept event)."""
        key = denial.key()
        known = self._events.get(key)
        if known is not None:
            self._events[key] = [known[0], known[1] + denial.count]
            return False
        if len(self._events) >= MAX_EVENTS:
            self.dropped += 1
            return False
        self._events[key] = [denial, denial.count]
        return True

    def extend(self, denials) -> None:
        for denial in denials:
            self.add(denial)

    def events(self) -> tuple:
        out = []
        for denial, count in self._events.values():
            if count != denial.count:
                denial = Denial(denial.wall, denial.operation, denial.target, denial.rule,
                                denial.pid, denial.command, count)
            out.append(denial)
        return tuple(out)

    def __len__(self) -> int:
        return len(self._events)


def from_refusal(refusal) -> Denial:
    """A network allowlist refusal (policy.netallow.Refusal, or its as_dict()) as a
    denial event."""
    if isinstance(refusal, dict):
        method, host, port, reason = (refusal["method"], refusal["host"], refusal["port"],
                                      refusal["reason"])
    else:
        method, host, port, reason = refusal.method, refusal.host, refusal.port, refusal.reason
    operation = "connect" if method in ("CONNECT", "SOCKS") else method
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Denial("network", operation, target, reason)


def from_limit(hit: dict) -> Denial:
    """The resource limit that ended a command ({"limit", "value", "reason", "killed"},
    as in Result.limit_hit) as a denial event."""
    name = str(hit.get("limit", ""))
    operation = "kill" if hit.get("killed", True) else "refuse"
    return Denial("limit", operation, f"command ({hit.get('reason', '')})",
                  f"limit {name}={hit.get('value', '')}")


def gather(refusals=(), limit_hit=None, events=()) -> tuple:
    """One run's denials, deduplicated: the supervisor's events, the allowlist's
    refusals, then the limit that ended the command."""
    log = DenialLog()
    log.extend(events)
    log.extend(from_refusal(refusal) for refusal in refusals)
    if limit_hit is not None:
        log.add(from_limit(limit_hit))
    return log.events()


def summary_line(denials, dropped: int = 0, shown: int = 3) -> str:
    """The CLI's end-of-run line, e.g. `nsbox: blocked 3 operations: write ~/.bashrc
    (outside the writable roots), ...`; empty when nothing was blocked."""
    if not denials and not dropped:
        return ""
    total = len(denials) + dropped
    noun = "operation" if total == 1 else "operations"
    parts = [d.describe() for d in denials[:shown]]
    more = total - len(parts)
    if more > 0:
        parts.append(f"and {more} more (--json-status lists them)")
    return f"nsbox: blocked {total} {noun}: " + "; ".join(parts) + "\n"
