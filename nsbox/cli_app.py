"""The typer application for every command but the `exec` fast path."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="nsbox: run commands in a Linux namespace sandbox.")


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                       "help_option_names": []})
def exec_(ctx: typer.Context):
    """Run a command in a fresh sandbox (see `nsbox exec --help`)."""
    from nsbox.cli import exec_command

    raise typer.Exit(exec_command(list(ctx.args)))


from nsbox.cli_profiles import profiles_app  # noqa: E402

app.add_typer(profiles_app, name="profiles")


policy_app = typer.Typer(no_args_is_help=True, help="Inspect sandbox policies.")
app.add_typer(policy_app, name="policy")


@policy_app.command("show", context_settings={"allow_extra_args": True,
                                              "ignore_unknown_options": True,
                                              "help_option_names": []})
def policy_show(ctx: typer.Context):
    """Print the effective policy as JSON (takes `nsbox exec`'s options)."""
    from nsbox import policy_show as show

    raise typer.Exit(show.main(list(ctx.args)))


@app.command()
def check(json_output: bool = typer.Option(False, "--json", help="print JSON instead of a table")):
    """Report what this host lets nsbox enforce, and how to fix what is missing."""
    from nsbox import doctor

    checks = doctor.run_checks()
    if json_output:
        import json

        print(json.dumps(checks, indent=2))
    else:
        doctor.render(checks)
    raise typer.Exit(0 if checks["verdict"]["level"] in ("full", "landlock") else 1)


@app.command()
def version():
    """Print nsbox's version."""
    from nsbox import __version__

    print(__version__)


def run_app(args: list) -> int:
    try:
        # Without standalone mode, click returns a typer.Exit's code instead of raising it.
        code = app(args=args, prog_name="nsbox", standalone_mode=False)
        if isinstance(code, int):
            return code
    except typer.Exit as done:
        return done.exit_code
    except SystemExit as done:
        return done.code or 0
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            return err.exit_code
        raise
    return 0
