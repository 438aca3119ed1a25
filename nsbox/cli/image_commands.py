"""`nsbox image import|list|rm`: images in nsbox's state directory, for --image NAME."""

import json
import sys

import typer

image_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Container images: import (OCI layout or 'docker save' tarball), "
                             "list, remove.")


def _state() -> str:
    from nsbox import state

    return state.ensure_state_dir()


def _fail(err) -> None:
    sys.stderr.write(f"nsbox: {err}\n")
    raise typer.Exit(125)


@image_app.command("import")
def import_(source: str = typer.Argument(..., help="an OCI image layout directory or tarball, "
                                                  "or a 'docker save' tarball"),
            name: str = typer.Argument(..., help="the name for --image NAME"),
            max_size: str = typer.Option("32G", "--max-size",
                                         help="refuse an image whose files exceed this in all")):
    """Apply the image's layers (with whiteouts) into a root directory; layers are kept by
    digest and shared between images."""
    from nsbox.errors import NsboxError
    from nsbox.plan import images
    from nsbox.policy.limit_values import parse_size

    try:
        limit = parse_size(max_size)
        found = images.import_image(_state(), source, name, max_total=limit,
                                    progress=lambda line: sys.stderr.write(f"nsbox: {line}\n"))
    except NsboxError as err:
        _fail(err)
    except ValueError as err:
        _fail(f"--max-size {max_size!r}: {err}")
    print(f"{found['name']}\t{found['root']}")


@image_app.command("list")
def list_(json_output: bool = typer.Option(False, "--json", help="print JSON")):
    """The imported images: name, layers, root directory."""
    from nsbox.plan import images

    found = images.listing(_state())
    if json_output:
        print(json.dumps([{k: r[k] for k in ("name", "root", "layers", "source")}
                          for r in found], indent=1))
        return
    for ref in found:
        print(f"{ref['name']}\t{len(ref['layers'])} layers\t{ref['root']}")


@image_app.command("rm")
def rm(names: list[str] = typer.Argument(..., help="image names")):
    """Forget images; their layers go once no image uses them (running sandboxes on them
    should end first)."""
    from nsbox.errors import NsboxError
    from nsbox.plan import images

    for name in names:
        try:
            images.remove(_state(), name)
        except NsboxError as err:
            _fail(err)
