"""The sandbox policy: frozen, pure data. No I/O and no kernel calls here."""

from nsbox.record import Record, fields, replace

from nsbox.policy import defaults
from nsbox.policy.limits import Limits

PRESETS = ("read-only", "workspace-write", "full-access")
# allowlist: an empty namespace whose only way out is a filtering proxy that
# reaches the names in `network_allow` (see policy/netallow.py).
NETWORK_MODES = ("none", "host", "allowlist")
# Fields left as None take their value from the preset when the Policy is built.
_PRESET_DEFAULTS = {
    "network": defaults.network_for,
    "hidden": defaults.hidden_for,
    "protected": defaults.protected_for,
    "git_protected": defaults.git_protected_for,
    "cache": defaults.cache_for,
}
ISOLATION_MODES = ("full", "landlock", "auto")
# Package managers' caches (plan/caches.py): one area for every sandbox, one per
# workspace, or none (the read-only home: package managers fail to cache).
CACHE_MODES = ("shared", "workspace", "off")
# overlay: the workspace is a copy-on-write layer; the real tree changes only on `nsbox apply`.
WORKSPACE_MODES = ("direct", "overlay")
ROOTFS_LAYERS = ("memory", "disk")


class Policy(Record):
    """What a sandbox may do. Paths may be relative; the plan resolves them."""

    preset: str = "workspace-write"
    workspace: str | None = None  # None: the current directory
    writable: tuple[str, ...] = ()  # extra writable roots
    network: str | None = None  # None: "allowlist" if network_allow is set, else by preset
    network_allow: tuple[str, ...] = ()  # names the allowlist proxy reaches; "*.x.org" = sub-domains
    seccomp: str = "default"  # profile name or path
    isolation: str = "full"
    best_effort: bool = False  # run with what can be applied instead of failing closed
    # A writable root that is / or holds a home directory is refused unless this is set.
    allow_broad_workspace: bool = False
    hostname: str = "nsbox"
    extra_env: tuple[tuple[str, str], ...] = ()  # set last, wins over all
    # Filesystem rules; None means the preset's defaults (see policy/defaults.py).
    hidden: tuple[str, ...] | None = None  # unreadable, shown as empty; "~" is $HOME
    protected: tuple[str, ...] | None = None  # read-only inside the workspace; "dir/" = a directory
    git_protected: tuple[str, ...] | None = None  # read-only inside every writable git dir
    # Environment: inherited minus secret-looking names, unless kept.
    env_keep: tuple[str, ...] = ()
    clearenv: bool = False  # start from PATH, HOME, TERM and LANG only
    limits: Limits = Limits()  # resource ceilings; a mapping such as {"memory": "512M"} works too
    cache: str | None = None  # shared | workspace | off (CACHE_MODES); None: by preset
    workspace_mode: str = "direct"  # direct | overlay (see WORKSPACE_MODES)
    # Full isolation only: a fresh empty tmpfs at each of these paths (one per run or
    # Session), and host directories shown read-only elsewhere ("HOST_DIR:PATH").
    private_dirs: tuple[str, ...] = ()
    read_only_binds: tuple[str, ...] = ()
    # Hidden like `hidden`, except the writable roots inside them: a directory holding
    # many sandboxes' workspaces, where each sandbox sees only its own.
    hidden_parents: tuple[str, ...] = ()
    # Watch for blocked writes and system calls and report them (Result.denials); off
    # removes the supervisor (network and limit events are reported regardless).
    report_denials: bool = True
    # Container mode: the sandbox's / is this directory (an extracted image) instead of
    # the host's, read-only; rootfs_writable gives it a private copy-on-write layer.
    rootfs: str | None = None
    rootfs_writable: bool = False
    # Where that layer lives: memory (a tmpfs of the sandbox's own, bounded by the tmp
    # limit) or disk (nsbox's state directory, for writes larger than memory).
    rootfs_layer: str = "memory"
    root_inside: bool = False  # the caller is uid/gid 0 in the user namespace (no capabilities)

    def __post_init__(self):
        check_choice("preset", self.preset, PRESETS)
        if self.network is None and self.network_allow:
            object.__setattr__(self, "network", "allowlist")
        for name, default_for in _PRESET_DEFAULTS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default_for(self.preset))
        for name in ("writable", "hidden", "protected", "git_protected", "env_keep",
                     "private_dirs", "read_only_binds", "hidden_parents"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not all(isinstance(v, str) for v in value):
                raise_policy(f"{name} must be a list of strings, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "extra_env", tuple(tuple(kv) for kv in self.extra_env))
        for pair in self.extra_env:
            if len(pair) != 2 or not pair[0] or "=" in pair[0]:
                raise_policy(f"extra_env entries must be (NAME, value) pairs; got {pair!r}")
        self._check_mount_paths()
        check_choice("network", self.network, NETWORK_MODES)
        self._check_network_allow()
        check_choice("isolation", self.isolation, ISOLATION_MODES)
        check_choice("cache", self.cache, CACHE_MODES)
        check_choice("workspace_mode", self.workspace_mode, WORKSPACE_MODES)
        check_choice("rootfs_layer", self.rootfs_layer, ROOTFS_LAYERS)
        if not isinstance(self.limits, Limits):
            object.__setattr__(self, "limits", Limits.from_mapping(self.limits))

    def _check_mount_paths(self) -> None:
        for path in self.private_dirs:
            if not path.startswith("/") or path.rstrip("/") in ("", "/tmp", "/run", "/dev",
                                                               "/proc"):
                raise_policy(f"private_dirs: {path!r} must be an absolute path other than /, "
                             "/tmp, /run, /dev and /proc (those are private already)")
        for path in self.hidden_parents:
            if not path.startswith("/") or path.rstrip("/") == "":
                raise_policy(f"hidden_parents: {path!r} must be an absolute path other than /")
        for entry in self.read_only_binds:
            source, _, target = entry.partition(":")
            if not source.startswith("/") or not target.startswith("/") or ":" in target:
                raise_policy(f"read_only_binds: {entry!r} must be HOST_DIR:PATH, two absolute "
                             "paths without another ':'")

    def _check_network_allow(self) -> None:
        value = self.network_allow
        if isinstance(value, (str, bytes)):
            raise_policy(f"network_allow must be a list of names, not {value!r}")
        if not value:
            object.__setattr__(self, "network_allow", ())
            return
        from nsbox.policy import netallow  # ipaddress: only when there is a list

        try:
            object.__setattr__(self, "network_allow", netallow.check_entries(value))
        except ValueError as err:
            raise_policy(str(err))
        if self.network == "host" and self.network_allow:
            raise_policy("network 'host' reaches everything, so an allow list would be "
                         "ignored; use network 'allowlist' to restrict it")

    def with_changes(self, **changes) -> "Policy":
        """A copy with `changes`; a new preset re-derives the fields still at the old preset's defaults."""
        if "preset" in changes:
            for name, default_for in _PRESET_DEFAULTS.items():
                if name not in changes and getattr(self, name) == default_for(self.preset):
                    changes[name] = None
        return replace(self, **changes)

    def hiding(self, *paths: str) -> "Policy":
        return replace(self, hidden=self.hidden + tuple(p for p in paths if p not in self.hidden))

    def unhiding(self, *paths: str) -> "Policy":
        return replace(self, hidden=tuple(p for p in self.hidden if p not in paths))

    def as_dict(self) -> dict:
        """Every field as JSON-ready data, in declaration order."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def digest(self) -> str:
        """A stable fingerprint of the policy as written; nsbox.plan.prepare.policy_digest
        gives the one with paths resolved, as records show it."""
        import hashlib
        import json

        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @property
    def workspace_writable(self) -> bool:
        return self.preset != "read-only"


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Record):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise_policy(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def raise_policy(message: str):
    from nsbox.errors import PolicyError

    raise PolicyError(message)
