"""The compiled plan: what nsbox.plan hands to nsbox.launch, as plain data.

The launch code reads these and decides nothing; they are pickled to the fork
server, so this module stays small and imports only data types.
"""

from nsbox.policy import limits as policy_limits
from nsbox.policy.limits import Enforcement, Limits
from nsbox.policy.model import Policy
from nsbox.record import Record

FULL = "full"
LANDLOCK = "landlock"


class LaunchPlan(Record):
    argv: tuple
    env: dict
    cwd: str
    uid: int
    gid: int
    ns_flags: int  # 0 in landlock-only isolation
    mounts: tuple  # policy.plan.MountStep, replayed in order; () in landlock-only isolation
    hostname: str
    loopback: bool
    use_mount_api: bool
    last_cap: int
    policy: Policy
    namespaces: tuple = ()  # the names behind ns_flags, for reports
    landlock: object = None  # a Landlock ruleset, applied in the command process
    seccomp_bpf: bytes | None = None  # compiled filter, loaded last before exec
    isolation: str = FULL  # what this run achieves: full | landlock
    isolation_missing: tuple = ()  # protections left out under best effort, in words
    isolation_fallback: str = ""  # why `auto` settled for less than full
    private_tmp: str | None = None  # landlock isolation: per-run TMPDIR, created and removed
    limits: object = None  # LimitsPlan: resource limits and their mechanisms
    net_proxy: object = None  # policy.netallow.ProxySettings for network "allowlist"
    watch: object = None  # plan.watch.Watch: what to compare after the run
    writable: tuple = ()  # the writable roots (as mounts, or as Landlock rules)
    hidden: tuple = ()  # landlock-only isolation: what Landlock keeps unreadable
    overlay: object = None  # plan.overlay.Run: the workspace is copy-on-write (overlay mode)
    git_layers: tuple = ()  # plan.gitsync.Layer: git dirs copy-on-write, applied after the run
    rootfs_layer: object = None  # plan.container.Layer: rootfs_writable's private upper layer
    # PID 1 builds the root in a mount namespace of its own, so that the caller, which
    # waits in the sandbox's other namespaces, keeps the host's files (full isolation).
    own_mount_ns: bool = False
    # plan.denial_rules.DenialWatch: the command loads this reporting variant of the seccomp
    # filter instead; PID 1 supervises it, or in landlock-only isolation the caller
    # (report_denials)
    denial_watch: object = None


class LimitsPlan:
    """The limits of one launch and how each is enforced (computed before fork)."""

    __slots__ = ("limits", "enforcement", "cgroups", "counters", "shared_rlimits")

    def __init__(self, limits: Limits, enforcement: Enforcement, cgroups: tuple = (),
                 counters: tuple = (), shared_rlimits: tuple = ()):
        self.limits = limits
        self.enforcement = enforcement
        # ((version, parent dir, controllers to enable, ((file, content, required), ...)), ...)
        self.cgroups = cgroups
        self.counters = counters  # ((name, maximum), ...) for the sandbox's user namespace
        self.shared_rlimits = shared_rlimits  # ((RLIMIT_NAME, value), ...): shares of the user's

    @property
    def wall(self):
        return self.limits.wall

    @property
    def rlimits(self) -> tuple:
        return self.enforcement.rlimits + self.shared_rlimits

    def applied(self) -> dict:
        """limit -> {"value", "mechanism", "scope" (sandbox | per process)[, "rlimit"]}:
        JSON-ready, for status reports."""
        report = {}
        for name, mechanism in self.enforcement.mechanisms:
            entry = {"value": self.limits.describe(name), "mechanism": mechanism,
                     "scope": policy_limits.scope(name, mechanism)}
            if mechanism == "rlimit":
                entry["rlimit"] = policy_limits.RLIMITS[name]
            report[name] = entry
        for name, reason in self.enforcement.unenforced:
            report[name] = {"value": self.limits.describe(name), "mechanism": None,
                            "reason": reason}
        return report

    def shares(self) -> dict:
        """The sandbox's maxima of per-user kernel counters: name -> value."""
        return dict(self.counters + self.shared_rlimits)
