"""Argument parsing for `nsbox exec`, kept free of typer: it is on the start-up path."""

# option -> (field, metavar or None for a switch, repeatable, help)
OPTIONS = {
    "--workspace": ("workspace", "DIR", False, "writable working tree (default: current directory)"),
    "--cwd": ("cwd", "DIR", False, "working directory inside the sandbox (default: the workspace)"),
    "--writable": ("writable", "PATH", True, "extra writable root; repeatable"),
    "--preset": ("preset", "NAME", False, "read-only | workspace-write (default) | full-access"),
    "--network": ("network", "MODE", False, "none (default: empty namespace, loopback only) | host"),
}
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
            result.values[key] = True
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


def help_text() -> str:
    lines = [USAGE, "", "Run CMD in a fresh sandbox. Options:"]
    for name, (_, metavar, repeatable, text) in OPTIONS.items():
        shown = f"{name} {metavar}" if metavar else name
        lines.append(f"  {shown:<22} {text}")
    lines += ["", "Exit status: CMD's own; 125 if nsbox failed to set up the sandbox;",
              "126 if CMD cannot be executed; 127 if CMD is not found."]
    return "\n".join(lines)
