"""`nsbox profiles`: list, show and check seccomp profiles."""

import json
import sys

import typer

from nsbox.errors import NsboxError, PolicyError
from nsbox.plan import profile_compiler
from nsbox.policy import profiles

profiles_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="seccomp profiles: the shipped ones, and checking your own.")


@profiles_app.command("list")
def list_():
    """List the shipped profiles (use one with `nsbox exec --seccomp NAME`)."""


    for name in profiles.names():
        try:
            comment = json.loads(profiles.read(profiles.find(name))).get("comment", "")
        except ValueError:
            comment = "(malformed)"
        print(f"{name:<12} {comment.split('. ')[0].split(': ')[0]}")


@profiles_app.command()
def show(name: str = typer.Argument(..., help="a shipped profile's name, or a path")):
    """Print a profile's JSON."""
    try:
        sys.stdout.write(profiles.read(profiles.find(name)).decode(errors="replace"))
    except PolicyError as err:
        sys.stderr.write(f"nsbox: {err}\n")
        raise typer.Exit(1)


@profiles_app.command()
def check(file: str = typer.Argument(..., help="a profile name or JSON file to check")):
    """Check a profile: JSON syntax, keys, actions, ops, syscall names; then compile it."""
    try:
        path = profiles.find(file)
        profile_compiler.compile_profile(profiles.read(path), path, network_off=False)
        profile = profile_compiler.load_profile(profiles.read(path), path)
    except NsboxError as err:
        sys.stderr.write(f"{err}\n")
        raise typer.Exit(1)
    print(f"{path}: ok ({len(profile.rules)} rules, default {profile.default_action})")
