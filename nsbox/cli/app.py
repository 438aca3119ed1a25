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
from nsbox.policy import files as policy_files
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
        real, data = policy_files.read_exact(path, what="file")
    except PolicyError as err:
        _fail(str(err), 2)
    try:
        if real.endswith(".json"):
            summary = "a seccomp profile; check it with `nsbox profiles check FILE`"
        else:
            widens = policy_files.widening_keys(data, path)
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
    elif args in (["policy"], ["profiles"]):
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
