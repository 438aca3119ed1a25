"""`nsbox exec` options: parsing (kept free of typer: it is on the start-up path) and
the one place where they become a Policy."""

# option -> (field, metavar or None for a switch, repeatable, help)
OPTIONS = {
    "--workspace": ("workspace", "DIR", False, "writable working tree (default: current directory)"),
    "--cwd": ("cwd", "DIR", False, "working directory inside the sandbox (default: the workspace)"),
    "--writable": ("writable", "PATH", True, "extra writable root; repeatable"),
    "--preset": ("preset", "NAME", False, "read-only | workspace-write (default) | full-access"),
    "--network": ("network", "MODE", False,
                  "none (default: empty namespace, loopback only) | host | allowlist "
                  "(only --allow-domain names, through a filtering proxy)"),
    "--allow-domain": ("network_allow", "NAME", True,
                       "reachable through the proxy (implies --network allowlist); repeatable; "
                       "*.example.org matches its sub-domains; NAME=IP pins NAME to IP"),
    "--seccomp": ("seccomp", "NAME|PATH", False,
                  "seccomp profile: default | strict | a JSON file (see 'nsbox profiles list')"),
    "--isolation": ("isolation", "MODE", False,
                    "full (default: namespaces + Landlock) | landlock (no namespaces) | auto"),
    "--best-effort": ("best_effort", None, False,
                      "run without protections this kernel lacks (listed on stderr)"),
    "--allow-broad-workspace": ("allow_broad_workspace", None, False,
                                "let a writable root be / or contain the home directory "
                                "(shell start-up files stay read-only)"),
}
OPTIONS.update({
    "--hide": ("hide", "PATH", True, "make PATH unreadable and empty inside; repeatable"),
    "--unhide": ("unhide", "PATH", True, "do not hide PATH (e.g. one of the default secret stores)"),
    "--env-keep": ("env_keep", "NAME", True, "pass variable NAME through even if it looks secret"),
    "--setenv": ("setenv", "NAME=VALUE", True, "set a variable inside; repeatable"),
    "--clearenv": ("clearenv", None, False, "start from PATH, HOME, TERM and LANG only"),
    "--policy": ("policy", "FILE", False,
                 "policy file (default: WORKSPACE/.nsbox/policy.toml, ~/.config/nsbox/config.toml)"),
    "--json-status": ("json_status", "FILE", False, "write a JSON record of the run to FILE"),
    "--cache": ("cache", "MODE", False,
                "package managers' caches (npm, pip, uv, pipx, ...): shared (default: one "
                "nsbox-owned area for all sandboxes) | workspace (this workspace's own) | off; "
                "see 'nsbox cache info'"),
})
OPTIONS["--limit"] = ("limit", "NAME=VALUE", True,
                      "resource limit; repeatable: pids=N memory=SIZE cpu=CORES wall=SECONDS "
                      "tmp=SIZE nofile=N fsize=SIZE inotify=N (e.g. memory=512M; NAME=none lifts "
                      "a default; defaults pids=4096 tmp=1G nofile=4096 inotify=64)")
OPTIONS["--workspace-mode"] = ("workspace_mode", "MODE", False,
                               "direct (default: writes go to the workspace) | overlay (writes "
                               "go to a kept copy-on-write layer; review with 'nsbox changes', "
                               "then 'nsbox apply' or 'nsbox discard')")
OPTIONS["--review"] = ("review", None, False,
                       "with --workspace-mode overlay: after the run, on a terminal, ask change "
                       "by change which to apply (y, n, d: diff, a: all remaining, q: quit)")
OPTIONS["--quiet-denials"] = ("quiet_denials", None, False,
                              "do not print the end-of-run line naming what the sandbox "
                              "blocked (--json-status still lists it)")
OPTIONS["--no-denial-events"] = ("no_denial_events", None, False,
                                 "do not watch for blocked writes and system calls (no "
                                 "supervisor; network and limit events are still reported); "
                                 "policy key report_denials = false")
OPTIONS.update({
    "--rootfs": ("rootfs", "DIR", False,
                 "container mode: DIR (an extracted image) is the sandbox's /, read-only; "
                 "the workspace and writable roots are mounted at their host paths"),
    "--rootfs-writable": ("rootfs_writable", None, False,
                          "with --rootfs or --image: / is writable through a private "
                          "copy-on-write layer, removed after the run (the image is unchanged)"),
    "--rootfs-layer": ("rootfs_layer", "WHERE", False,
                       "where --rootfs-writable keeps its layer: memory (default: a tmpfs of "
                       "the sandbox's own, bounded by the tmp limit) | disk (nsbox's state "
                       "directory, for larger writes)"),
    "--root-inside": ("root_inside", None, False,
                      "run as uid/gid 0 inside the user namespace (the caller outside; no "
                      "capabilities), for images whose tools expect root"),
    "--image": ("image", "NAME", False,
                "container mode on an image imported with 'nsbox image import': its root "
                "(as --rootfs) and its config (as --image-config)"),
    "--image-config": ("image_config", "FILE", False,
                       "an OCI image config (JSON): its Env, WorkingDir, User and "
                       "Entrypoint/Cmd apply as a container runtime applies them"),
})
ALIASES = {"-w": "--workspace", "-C": "--cwd"}

USAGE = "usage: nsbox exec [OPTIONS] [--] CMD [ARGS...]"


class UsageError(Exception):
    pass


class ExecArgs:
    """Parsed `nsbox exec` arguments (a plain class: dataclasses cost ~10 ms to import)."""

    def __init__(self):
        self.command = []
        self.values = {}
        self.show_help = False


def parse(args: list) -> ExecArgs:
    result = ExecArgs()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            result.command = args[i + 1:]
            return result
        if arg in ("-h", "--help"):
            result.show_help = True
            return result
        if not arg.startswith("-") or arg == "-":
            result.command = args[i:]
            return result
        name, eq, inline = arg.partition("=")
        name = ALIASES.get(name, name)
        spec = OPTIONS.get(name)
        if spec is None:
            raise UsageError(f"unknown option {arg!r}; see 'nsbox exec --help'")
        key, metavar, repeatable, _ = spec
        if metavar is None:
            result.values[key] = _switch(name, inline) if eq else True
            i += 1
            continue
        if eq:
            value = inline
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 1
        else:
            raise UsageError(f"option {name} needs a value ({metavar})")
        if repeatable:
            result.values.setdefault(key, []).append(value)
        else:
            result.values[key] = value
        i += 1
    return result


_SWITCH_VALUES = {"true": True, "yes": True, "1": True, "on": True,
                  "false": False, "no": False, "0": False, "off": False}


def _switch(name: str, value: str) -> bool:
    """`--best-effort=no` means no: a switch's value is read, never ignored."""
    try:
        return _SWITCH_VALUES[value.lower()]
    except KeyError:
        raise UsageError(f"{name} is a switch: give it alone, or as {name}=true or "
                         f"{name}=false (got {value!r})") from None


def help_text() -> str:
    import textwrap

    short = {long: alias for alias, long in ALIASES.items()}
    lines = [USAGE, "", "Run CMD in a fresh sandbox. Options:"]
    for name, (_, metavar, repeatable, text) in OPTIONS.items():
        shown = f"{short[name]}, {name}" if name in short else name
        shown = f"{shown} {metavar}" if metavar else shown
        lines.append(f"  {shown}")
        lines += textwrap.wrap(text, 80, initial_indent=" " * 8, subsequent_indent=" " * 8)
    lines += ["  -h, --help", " " * 8 + "show this help and exit"]
    lines += ["", "Exit status: CMD's own; 125 if nsbox failed to set up the sandbox;",
              "126 if CMD cannot be executed; 127 if CMD is not found;",
              "124 if the wall limit killed it."]
    return "\n".join(lines)


# `nsbox exec` values that are not Policy settings; every other value is one, under
# its field name (see policy.loader.merge), and must have been given on the command line.
NOT_POLICY = ("cwd", "policy", "json_status", "setenv", "limit", "review", "quiet_denials",
              "no_denial_events", "image", "image_config")


def policy_from_options(values: dict, on_policy_file=None):
    """The one place where `nsbox exec` options become a Policy.

    Layers, lowest first: the preset's defaults, the policy file (narrowed unless
    trusted, see policy.files), then the flags actually given (a flag left out keeps
    the file's value). `on_policy_file` gets the file's trust Decision, if one was used.
    """
    import os

    from nsbox.policy import files as policy_files
    from nsbox.policy import loader

    try:
        os.getcwd()
    except FileNotFoundError:
        from nsbox.errors import PolicyError

        raise PolicyError("the current directory no longer exists; cd to an existing "
                          "directory and run again") from None

    flags = {key: value for key, value in values.items() if key not in NOT_POLICY}
    if "setenv" in values:
        flags["extra_env"] = loader.parse_setenv(values["setenv"])
    if values.get("no_denial_events"):
        flags["report_denials"] = False
    if "limit" in values:
        from nsbox.policy.limit_values import parse_options

        flags["limits"] = parse_options(values["limit"])
    policy, decision = policy_files.resolve(values.get("policy"), flags)
    if decision is not None and on_policy_file is not None:
        on_policy_file(decision)
    return policy
