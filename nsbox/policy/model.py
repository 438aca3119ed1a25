"""The sandbox policy: frozen, pure data. No I/O and no kernel calls here."""

from dataclasses import dataclass, field, replace

PRESETS = ("read-only", "workspace-write", "full-access")
NETWORK_MODES = ("none", "host")
ISOLATION_MODES = ("full", "landlock", "auto")


@dataclass(frozen=True)
class Policy:
    """What a sandbox may do. Paths may be relative; the plan resolves them."""

    preset: str = "workspace-write"
    workspace: str | None = None  # None: the current directory
    writable: tuple[str, ...] = ()  # extra writable roots
    network: str = "none"
    seccomp: str = "default"  # profile name or path
    isolation: str = "full"
    best_effort: bool = False  # run with what can be applied instead of failing closed
    hostname: str = "nsbox"
    extra_env: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self):
        check_choice("preset", self.preset, PRESETS)
        check_choice("network", self.network, NETWORK_MODES)
        check_choice("isolation", self.isolation, ISOLATION_MODES)
        if isinstance(self.writable, (str, bytes)):
            raise_policy(f"writable must be a list of paths, not {self.writable!r}")

    def with_changes(self, **changes) -> "Policy":
        return replace(self, **changes)

    @property
    def workspace_writable(self) -> bool:
        return self.preset != "read-only"


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise_policy(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def raise_policy(message: str):
    from nsbox.errors import PolicyError

    raise PolicyError(message)
