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


@app.command()
def version():
    """Print nsbox's version."""
    from nsbox import __version__

    print(__version__)


def run_app(args: list) -> int:
    try:
        app(args=args, prog_name="nsbox", standalone_mode=False)
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
