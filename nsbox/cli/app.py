"""The typer application for every command but the `exec` fast path."""

import json
import os
import sys

import typer

from nsbox import __version__, trust_store
from nsbox.cli import check as host_check
from nsbox.cli import execute
from nsbox.cli import policy_show as show
from nsbox.cli.profiles import profiles_app
from nsbox.errors import PolicyError
from nsbox.policy import file_trust
from nsbox.policy.files import WORKSPACE_FILE

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"max_content_width": 80, "terminal_width": 80,
                                    "help_option_names": ["-h", "--help"]},
                  help="nsbox: run commands in a Linux namespace sandbox.")


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                       "help_option_names": []})
def exec_(ctx: typer.Context):
    """Run a command in a fresh sandbox (see `nsbox exec --help`)."""
    raise typer.Exit(execute.run(list(ctx.args)))


app.add_typer(profiles_app, name="profiles")


policy_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect sandbox policies.")
app.add_typer(policy_app, name="policy")


@policy_app.command("show", context_settings={"allow_extra_args": True,
                                              "ignore_unknown_options": True,
                                              "help_option_names": []})
def policy_show(ctx: typer.Context):
    """Print the effective policy as JSON (takes `nsbox exec`'s options)."""
    raise typer.Exit(show.main(list(ctx.args)))


@app.command()
def trust(file: str = typer.Argument(None, help="default: ./.nsbox/policy.toml"),
          list_: bool = typer.Option(False, "--list", help="list the trusted files")):
    """Trust a policy file or seccomp profile as it is now, so that it may widen the policy.

    A policy file that a sandbox could have written (the workspace's, or one under a
    writable root) otherwise only narrows the policy. Any change to the file undoes this.
    """

    if list_:
        if file:
            _fail("`nsbox trust --list` takes no FILE", 2)
        _list_trusted()
        return
    path = _file_or_default(file)
    try:
        real, data = file_trust.read_exact(path, what="file")
    except PolicyError as err:
        _fail(str(err), 2)
    try:
        if real.endswith(".json"):
            summary = "a seccomp profile; check it with `nsbox profiles check FILE`"
        else:
            widens = file_trust.widening_keys(data, path)
            summary = (f"it widens nsbox's defaults: {', '.join(widens)}" if widens
                       else "it only narrows nsbox's defaults")
        sha256 = trust_store.digest(data)
        trust_store.add(real, sha256)
    except PolicyError as err:
        _fail(f"{err}; nothing was trusted", 1)
    print(f"trusted {real}\n  sha256 {sha256}\n  {summary}")


@app.command()
def untrust(file: str = typer.Argument(None, help="default: ./.nsbox/policy.toml")):
    """Forget that a file was trusted: from now on it may only narrow the policy."""


    real = os.path.realpath(file or _default_file())
    try:
        removed = trust_store.remove(real)
    except PolicyError as err:
        _fail(str(err), 1)
    if not removed:
        _fail(f"{real} was not trusted", 1)
    print(f"untrusted {real}")


def _default_file() -> str:


    return os.path.join(".", WORKSPACE_FILE)


def _file_or_default(file: str | None) -> str:
    if file:
        return file
    path = _default_file()
    if not os.path.isfile(path):
        _fail(f"no FILE given, and there is no {path} here", 2)
    return path


def _list_trusted() -> None:
    try:
        entries = trust_store.entries()
    except PolicyError as err:
        _fail(str(err), 1)
    if not entries:
        print("no trusted files")
    for path, sha256 in sorted(entries.items()):
        try:
            with open(path, "rb") as f:
                now = "" if trust_store.digest(f.read()) == sha256 else "  (changed: untrusted)"
        except OSError:
            now = "  (missing)"
        print(f"{sha256}  {path}{now}")


def _fail(message: str, code: int):
    sys.stderr.write(f"nsbox: {message}\n")
    raise typer.Exit(code)


from nsbox.cli.image_commands import image_app  # noqa: E402 (one app per group of commands)

app.add_typer(image_app, name="image")

cache_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Package managers' caches: the nsbox-owned area sandboxes write.")
app.add_typer(cache_app, name="cache")


def _cache_base() -> str:
    from nsbox import state

    return os.path.realpath(state.cache_dir())


def _cache_leaf(workspace: str | None) -> tuple:
    """(base, leaf) of the shared area, or of WORKSPACE's own."""
    from nsbox.plan import caches

    base = _cache_base()
    if workspace is None:
        return base, caches.leaf_path(base, caches.SHARED)
    real = os.path.realpath(os.path.expanduser(workspace))
    if not os.path.isdir(real):
        _fail(f"workspace {workspace!r} is not a directory", 2)
    return base, caches.leaf_path(base, "workspace", real)


@cache_app.command("info")
def cache_info(workspace: str = typer.Option(None, "--workspace", "-w",
                                             help="default: the current directory"),
               json_output: bool = typer.Option(False, "--json", help="print JSON")):
    """Where the caches are, how big each tool's part is, and the mode a run here gets."""
    from nsbox.cli import exec_args
    from nsbox.plan import caches

    if workspace and not os.path.isdir(workspace):
        _fail(f"workspace {workspace!r} is not a directory", 2)
    values = {"workspace": workspace} if workspace else {}
    try:
        mode = exec_args.policy_from_options(values).cache
    except PolicyError as err:
        _fail(str(err), 1)
    real = os.path.realpath(os.path.expanduser(workspace or "."))
    base, shared = _cache_leaf(None)
    own = caches.leaf_path(base, "workspace", real)
    others = caches.workspace_leaves(base)
    report = {
        "mode": mode, "workspace": real, "area": os.path.join(base, caches.AREA),
        "shared": {"path": shared, "bytes": _usage_by_tool(shared)},
        "workspace_area": {"path": own, "bytes": _usage_by_tool(own)},
        "workspace_areas": {"count": len(others), "bytes": sum(map(_usage, others))},
    }
    if json_output:
        print(json.dumps(report, indent=2))
        return
    in_use = {"shared": shared, "workspace": own}.get(mode)
    print(f"mode: {mode} (for {real}){'' if in_use else ': package managers get no cache'}")
    print(f"area: {report['area']}")
    for name, key in (("shared", "shared"), ("this workspace", "workspace_area")):
        sizes = report[key]["bytes"]
        print(f"{name}: {report[key]['path']}  {_size(sum(sizes.values()))}")
        for tool, size in sizes.items():
            if size:
                print(f"  {tool:<8}{_size(size):>10}")
    print(f"all workspaces' areas: {len(others)}, {_size(report['workspace_areas']['bytes'])}")


@cache_app.command("clear")
def cache_clear(workspace: str = typer.Option(None, "--workspace", "-w",
                                              help="clear this workspace's own area instead"),
                all_: bool = typer.Option(False, "--all",
                                          help="clear the shared area and every workspace's")):
    """Empty the shared cache area (or one workspace's, or all); symlinks are not followed."""
    from nsbox.plan import caches

    if all_ and workspace:
        _fail("--all and --workspace exclude each other", 2)
    base, leaf = _cache_leaf(workspace)
    leaves = [leaf] + (caches.workspace_leaves(base) if all_ else [])
    freed = 0
    for path in leaves:
        try:
            freed += _clear_area(path, base)
        except (PolicyError, OSError) as err:
            _fail(f"cannot clear {path}: {getattr(err, 'strerror', None) or err}", 1)
    print(f"cleared {', '.join(leaves) if len(leaves) < 4 else f'{len(leaves)} areas'}: "
          f"{_size(freed)} freed")


# tool -> its directories inside an area (see policy.defaults.CACHE_ENV)
_CACHE_TOOLS = (("npm", ("npm",)), ("pip", ("cache/pip",)), ("uv", ("cache/uv",)),
                ("poetry", ("cache/pypoetry",)), ("pipx", ("pipx",)),
                ("go", ("go", "cache/go-build")))


def _usage(path: str) -> int:
    """Bytes on disk below `path`, symlinks not followed (0 if missing)."""
    total = 0
    for top, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _usage_by_tool(leaf: str) -> dict:
    """tool -> bytes, and "other" for the rest of the area."""
    out, counted = {}, 0
    for tool, dirs in _CACHE_TOOLS:
        size = sum(_usage(os.path.join(leaf, d)) for d in dirs)
        out[tool] = size
        counted += size
    out["other"] = max(0, _usage(leaf) - counted)
    return out


def _clear_area(leaf: str, base: str) -> int:
    """Empty the area `leaf` (kept: running sandboxes may have it mounted); the bytes
    freed. Nothing is followed: every directory is opened relative to its parent's
    descriptor with O_NOFOLLOW, so a symlink planted inside removes only itself."""
    from nsbox.plan import caches

    if not leaf.startswith(os.path.join(base, caches.AREA) + "/"):
        raise PolicyError(f"{leaf} is not a package cache area")
    if not caches.is_ours(base, leaf):
        return 0
    before = _usage(leaf)
    fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _empty(fd)
        os.mkdir(caches.XDG_CACHE_DIR, 0o700, dir_fd=fd)  # as a new area has it
    finally:
        os.close(fd)
    return before


def _empty(dir_fd: int) -> None:
    import stat

    for name in os.listdir(dir_fd):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            continue
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
                os.fchmod(fd, 0o700)  # Go makes its module cache read-only
            _empty(fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024


@app.command("changes")
def changes_(run: str = typer.Argument(None, help="a run id; default: list the kept runs"),
             json_output: bool = typer.Option(False, "--json", help="print JSON")):
    """List the runs an overlay workspace kept, or show what one run changed."""
    from nsbox.cli import changes

    raise typer.Exit(changes.show(run, json_output) if run else changes.list_runs(json_output))


@app.command("diff")
def diff_(run: str = typer.Argument(..., help="a run id (see `nsbox changes`)"),
          paths: list[str] = typer.Argument(None, help="only these paths (relative to the workspace)")):
    """A unified diff of what a kept run changed (one line for binaries)."""
    from nsbox.cli import changes

    raise typer.Exit(changes.diff(run, paths or ()))


@app.command("apply")
def apply_(run: str = typer.Argument(..., help="a run id (see `nsbox changes`)"),
           paths: list[str] = typer.Argument(None, help="only these paths (relative to the workspace)"),
           force: bool = typer.Option(False, "--force",
                                      help="apply over real files that changed since the run started"),
           include_protected: list[str] = typer.Option(
               None, "--include-protected", metavar="PATH",
               help="apply this protected path too (.git/config, .git/hooks/..., .envrc, ...); repeatable")):
    """Apply a kept run's changes to the real workspace; the run is removed once all are applied."""
    from nsbox.cli import changes

    raise typer.Exit(changes.apply(run, paths or (), force, include_protected or ()))


@app.command("discard")
def discard_(runs: list[str] = typer.Argument(None, help="run ids"),
             older_than: str = typer.Option("", "--older-than", metavar="AGE",
                                            help="every run started more than AGE ago (7d, 12h, 30m)")):
    """Drop kept runs without applying them."""
    from nsbox.cli import changes

    if not runs and not older_than:
        _fail("name a run, or pass --older-than AGE", 2)
    raise typer.Exit(changes.discard(runs or (), older_than))


@app.command()
def check(json_output: bool = typer.Option(False, "--json", help="print JSON instead of a table")):
    """Report what this host lets nsbox enforce, and how to fix what is missing."""
    checks = host_check.run_checks()
    if json_output:

        print(json.dumps(checks, indent=2))
    else:
        host_check.render(checks)
    raise typer.Exit(0 if checks["verdict"]["level"] in ("full", "landlock") else 1)


@app.command()
def version():
    """Print nsbox's version."""
    print(__version__)


def run_app(args: list) -> int:
    """Run the typer app; usage errors print one message and return 2, never a traceback."""
    if args in ([], ["help"]):
        args = ["--help"]
    elif args[0] == "help":
        args = args[1:] + ["--help"]
    elif args[0] in ("--version", "-V"):
        args = ["version"] + args[1:]
    elif args in (["policy"], ["profiles"], ["cache"], ["image"]):
        args = args + ["--help"]
    try:
        # Without standalone mode, click returns a typer.Exit's code instead of raising it.
        code = app(args=args, prog_name="nsbox", standalone_mode=False)
        if isinstance(code, int):
            return code
    except typer.Exit as done:
        return done.exit_code
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # usage errors of the click typer bundles (or of click)
        if callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            return err.exit_code
        if isinstance(err, OSError):

            try:
                os.getcwd()
                problem = f"{err.strerror or err}{': ' + str(err.filename) if err.filename else ''}"
            except FileNotFoundError:
                problem = "the current directory no longer exists; cd to an existing one"
            sys.stderr.write(f"nsbox: {problem}\n")
            return 1
        raise
    return 0
