"""One-line hints that name the policy knob behind a denial.

Only patterns recognisable from the denial events themselves (and, when given, the
policy that ran): a package manager's cache in the read-only home, a write outside the
writable roots, a protected path, a hidden path, the sandbox's private /run, a name the
allowlist refused, a seccomp rule, a resource limit. Nothing blocked, no hint.
"""

from nsbox.policy.denials import DIRECT, PRIVATE_RUN
from nsbox.policy.netallow import NOT_LISTED, RAW_IP

# Per-user places package managers write to on their own. The first group is what the
# nsbox cache area stands in for (policy/defaults.py CACHE_ENV); the rest it leaves alone.
CACHE_AREA_DIRS = (".cache", ".npm", ".local/pipx", ".local/share/pipx", "go/pkg/mod")
OTHER_TOOL_DIRS = (".cargo", ".rustup", ".m2", ".gradle", ".yarn", ".pnpm-store",
                   ".local/share/pnpm", ".bun", ".local/share/uv", ".local/share/virtualenv",
                   ".local/lib", ".local/bin", ".nvm", ".node-gyp", ".conda", ".ivy2", ".sbt")
MAX_HINTS = 4


def hints(denials, policy=None) -> list:
    """A hint line (no trailing newline) per kind of denial in `denials`
    (policy.denials.Denial records), in the order first met; [] when nothing was blocked.
    `policy` (the run's Policy), when given, makes the cache, hidden-path and seccomp
    hints exact."""
    found: dict = {}  # kind -> hint, first seen first
    refused_names: list = []
    for denial in denials:
        kind, text = _hint(denial, policy)
        if kind == "allowlist":  # one hint naming every refused name, where the first was
            host = _host(denial.target)
            if host not in refused_names:
                refused_names.append(host)
            found[kind] = _allowlist_hint(refused_names)
        elif kind:
            found.setdefault(kind, text)
    return list(found.values())[:MAX_HINTS]


def _hint(denial, policy) -> tuple:
    wall, target, rule = denial.wall, denial.target, denial.rule
    if _under(target, PRIVATE_RUN):
        return "run", ("/run inside the sandbox is its own empty directory: the host's daemon "
                       "sockets (docker, D-Bus, ssh-agent) are out of reach by design; run "
                       "commands that need them outside nsbox")
    if wall == "network":
        if rule == NOT_LISTED:
            return "allowlist", ""
        if rule == RAW_IP:
            return "raw-ip", (f"{target} was asked for by address: allowlists match names; list "
                              "the address itself only if you mean it (--allow-domain ADDRESS)")
        if rule == DIRECT:
            return "direct", (f"{target} was connected to directly: with --network allowlist "
                              "only the proxy nsbox names in HTTPS_PROXY, HTTP_PROXY and "
                              "ALL_PROXY reaches the allowed names; point the tool at it")
        if rule.startswith("resolves to non-public address"):
            host = _host(target)
            return "private", (f"{host} resolves to a non-public address, which only an exactly "
                               f"listed name may reach: --allow-domain {host} (not a wildcard), "
                               f"or pin it with --allow-domain {host}=ADDRESS")
        return "network", ("the network is closed: --network allowlist with --allow-domain NAME "
                           "([network] allow), or --network host")
    if wall == "limit":
        name = rule.split(" ", 1)[-1].split("=", 1)[0] or "NAME"
        return f"limit-{name}", (f"the {name} limit was reached: --limit {name}=VALUE "
                                 f"([limits] {name}) raises it, {name}=none lifts it")
    if wall == "seccomp":
        call = target if denial.operation == "syscall" else denial.operation
        named = rule[len("seccomp profile "):] if rule.startswith("seccomp profile ") else ""
        profile = named or (policy.seccomp if policy is not None else "")
        profile = f"'{profile}'" if profile else "in force"
        if call == "socket" and policy is not None and policy.network == "none" \
                and policy.isolation != "full":
            # Without a network namespace (landlock-only), inet sockets are refused too.
            return "seccomp-socket", (
                "socket() is refused for inet sockets while the network is closed "
                "(--network host opens it) and for the families the seccomp profile "
                f"{profile} refuses (--seccomp FILE)")
        return f"seccomp-{call}", (
            f"{call}() is refused by the seccomp profile {profile}; only a profile of your "
            "own allows it: --seccomp FILE (see 'nsbox profiles list')")
    if wall == "hidden":
        entry = _hidden_entry(target, policy) or "PATH"
        return f"hidden-{entry}", (f"{target} is hidden (nsbox hides secret stores by default, "
                                   f"and --hide / [filesystem] hide paths); if the command needs "
                                   f"it, --unhide {entry} ([filesystem] unhide) shows it")
    if wall == "filesystem":
        if "protected" in rule:
            if "/.git/" in target + "/" or "/.git/" in rule + "/":
                return "git", ("git hooks and pointers stay read-only so a command cannot "
                               "plant code your next git command runs (config changes are "
                               "applied after the run, key by key); [filesystem] git_protected "
                               "changes the list")
            return "protected", (f"{target} is protected (it runs later on your machine without "
                                 "asking); [filesystem] protected changes the list")
        if _in_tool_dir(target, CACHE_AREA_DIRS):
            return "cache", _cache_hint(policy)
        if _in_tool_dir(target, OTHER_TOOL_DIRS):
            return "tool-dir", ("a tool's own directory in the read-only home: point it into the "
                                "workspace with --setenv (CARGO_HOME, GRADLE_USER_HOME, ...) or "
                                "make it writable with --writable PATH (your host tools read it "
                                "later)")
        if getattr(policy, "preset", "") == "read-only":
            return "writable", ("the read-only preset writes nowhere but the private /tmp: "
                                "--preset workspace-write makes the workspace writable")
        return "writable", ("writes outside the workspace and $TMPDIR are refused: --writable "
                            "PATH ([filesystem] writable) adds a writable directory")
    return "", ""


def _cache_hint(policy) -> str:
    mode = getattr(policy, "cache", None)
    if mode == "off":
        return ("package caches are off: --cache shared or --cache workspace ([cache] mode) "
                "gives pip, npm, npx, uv, pipx, Poetry and go a writable nsbox-owned cache")
    if mode in ("shared", "workspace"):
        return ("this tool ignored the cache variables nsbox sets (XDG_CACHE_HOME, "
                "npm_config_cache, PIP_CACHE_DIR, ...; see 'nsbox cache info'): set its own "
                "with --setenv")
    return ("a package manager's cache in the read-only home: --cache shared or --cache "
            "workspace ([cache] mode) gives pip, npm, npx, uv, pipx, Poetry and go a writable "
            "nsbox-owned cache")


def _allowlist_hint(hosts: list) -> str:
    flags = " ".join(f"--allow-domain {host}" for host in hosts[:3])
    more = f" (and {len(hosts) - 3} more)" if len(hosts) > 3 else ""
    names = ", ".join(f'"{host}"' for host in hosts[:3])
    return f"not on the network allowlist: {flags}{more} ([network] allow = [{names}])"


def _host(target: str) -> str:
    """The host of "host:port" or "[v6]:port"."""
    if target.startswith("["):
        return target[1:target.find("]")] if "]" in target else target
    host, colon, port = target.rpartition(":")
    return host if colon and port.isdigit() else target


def _hidden_entry(target: str, policy) -> str:
    """The policy's hidden entry (as --unhide takes it) that covers `target`, or ""."""
    import fnmatch

    for entry in getattr(policy, "hidden", ()) or ():
        if entry.startswith("~/"):
            rel = entry[2:].rstrip("/")
            if "*" not in rel:
                if _in_tool_dir(target, (rel,)):
                    return entry
            else:  # a name pattern for the files of one directory (~ or ~/.config)
                where, _, pattern = rel.rpartition("/")
                parent, _, name = target.rpartition("/")
                if where:
                    home, slash, rest = parent.rpartition("/" + where)
                    parent = home if slash and not rest else ""
                if _looks_like_home(parent) and fnmatch.fnmatch(name.lower(), pattern.lower()):
                    return entry
        elif _under(target, (entry.rstrip("/"),)):
            return entry
    return ""


def _under(path: str, roots: tuple) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def _in_tool_dir(path: str, names: tuple) -> bool:
    """Whether `path` is in a home's NAME (~/NAME/..., /home/u/NAME/..., /root/NAME/...)."""
    for name in names:
        if path.startswith(f"~/{name}/") or path == f"~/{name}":
            return True
        marker = f"/{name}"
        at = path.find(marker + "/")
        if at < 0 and path.endswith(marker):
            at = len(path) - len(marker)
        if at > 0 and _looks_like_home(path[:at]):
            return True
    return False


def _looks_like_home(path: str) -> bool:
    parts = path.strip("/").split("/")
    return (path == "/root" or (len(parts) == 2 and parts[0] == "home")
            or (len(parts) >= 2 and parts[-2] == "home"))
