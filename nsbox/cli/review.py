"""`nsbox exec --review`: after an overlay run, ask file by file which changes to apply
(in the style of `git add -p`, one question per manifest entry), then apply them with
plan/apply.py's rules (conflicts stop it, protected paths are never applied from here).

After the launch `nsbox exec` lives in the sandbox's namespaces, where the workspace's
path names the overlay and the state directory is hidden; so the review runs in a
helper forked before the launch (start), which waits on a pipe for the run's id
(finish) and then works in the host's view, as `nsbox apply` does. Only imported
when --review is given.
"""

import os
import signal
import sys

from nsbox.plan import apply as applying
from nsbox.plan import overlay

PROMPT = "Apply [y,n,d(diff),a(all remaining),q(quit)]? "
HELP = ("y - apply this change\nn - do not apply this change\nd - show its diff\n"
        "a - apply this and all remaining changes\nq - quit; apply what was chosen so far\n"
        "(Ctrl-C: stop without applying anything)\n")


def interactive(stdin=None, stderr=None) -> bool:
    """A terminal to ask on: stdin and stderr are TTYs."""
    stdin = stdin or sys.stdin
    stderr = stderr or sys.stderr
    try:
        return stdin.isatty() and stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Helper:
    def __init__(self, pid: int, pipe_w: int):
        self.pid = pid
        self.pipe_w = pipe_w


def start(state_dir: str) -> Helper:
    """Fork the reviewer before the launch; it waits for finish()."""
    pipe_r, pipe_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(pipe_w)
        code = 1
        try:
            # The run's signals are the command's: Ctrl-C during the run is not for us.
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
                signal.signal(sig, signal.SIG_IGN)
            chunks = []
            while chunk := os.read(pipe_r, 4096):
                chunks.append(chunk)
            run_id = b"".join(chunks).decode().strip()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            code = review(state_dir, run_id) if run_id else 0
        except BaseException as err:  # noqa: BLE001 - the child must never return
            try:
                sys.stderr.write(f"nsbox: review failed: {err}\n")
            except BaseException:  # noqa: BLE001
                pass
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(pipe_r)
    return Helper(pid, pipe_w)


def finish(helper: Helper, run_id) -> None:
    """Hand the kept run (None: nothing kept) to the reviewer and wait for it."""
    try:
        if run_id:
            os.write(helper.pipe_w, run_id.encode())
    finally:
        os.close(helper.pipe_w)
    sys.stderr.flush()
    while True:
        try:
            os.waitpid(helper.pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def describe(entry) -> str:
    """`created file src/app.py (12 bytes)`."""
    what = "type changed" if entry.what == "type changed" else (
        "mode changed" if entry.what == "mode" else entry.what)
    kind = {"file": "file", "dir": "directory", "symlink": "symlink"}.get(entry.kind,
                                                                        "special file")
    path = entry.path + ("/" if entry.kind == "dir" else "")
    detail = ""
    if entry.kind == "file" and entry.what != "deleted":
        detail = f" ({_size(entry.size)})"
    elif entry.kind == "symlink" and entry.what != "deleted":
        detail = f" -> {entry.target}"
    if entry.what == "mode" and entry.mode is not None:
        detail += f" (mode {entry.mode:o})"
    return f"{what} {kind} {path}{detail}"


def _size(size) -> str:
    if size is None:
        return "? bytes"
    if size < 10 * 1024:
        return f"{size} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
    return f"{size} bytes"


def review(state_dir: str, run_id: str, stdin=None, out=None, home: str = "") -> int:
    """Ask about each change of kept run `run_id`, apply the chosen ones; 0, or 1 when
    the apply was refused."""
    from nsbox import state

    stdin = stdin or sys.stdin
    out = out or sys.stderr
    run, meta, entries = overlay.load(state_dir, run_id)
    home = home or state.home()
    out.write(f"nsbox: reviewing run {run.id} in {run.workspace}: {overlay.summary(entries)}\n")
    try:
        chosen = _choose(entries, run, home, stdin, out)
    except KeyboardInterrupt:
        chosen = None
    if chosen is None:
        out.write(f"\nnsbox: interrupted: nothing applied; run {run.id} kept "
                  f"(nsbox changes {run.id})\n")
        return 1
    out.flush()
    # Answers given: an apply is not cut short halfway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return _apply(run, meta, entries, chosen, out, home)


def _choose(entries, run, home: str, stdin, out):
    """The entries the user chose; None when interrupted."""
    chosen = []
    take_all = False
    for index, entry in enumerate(entries):
        line = f"({index + 1}/{len(entries)}) {describe(entry)}"
        if applying.is_protected(entry.path, home, run.workspace):
            out.write(f"{line}\n  protected: skipped here; it needs `nsbox apply {run.id} "
                      f"{entry.path} --include-protected {entry.path}`\n")
            continue
        if take_all:
            out.write(f"{line}\n  applying (a)\n")
            chosen.append(entry)
            continue
        answer = _ask(entry, line, run, stdin, out)
        if answer == "abort":
            return None
        if answer == "q":
            break
        if answer in ("y", "a"):
            chosen.append(entry)
            take_all = answer == "a"
    return chosen


def _ask(entry, line: str, run, stdin, out) -> str:
    while True:
        try:  # Ctrl-C may land while the prompt is written as well as while reading
            out.write(f"{line}\n{PROMPT}")
            out.flush()
            reply = stdin.readline()
        except KeyboardInterrupt:
            return "abort"
        if not reply:  # end of input
            out.write("\n")
            return "q"
        reply = reply.strip().lower()[:1]
        if reply in ("y", "n", "a", "q"):
            return reply
        if reply == "d":
            out.write(_diff(run, entry))
            continue
        out.write(HELP)


def _diff(run, entry) -> str:
    from nsbox.plan import diff_text

    return diff_text.run_diff(run, entry)


def _apply(run, meta, entries, chosen, out, home: str) -> int:
    if not chosen:
        out.write(f"nsbox: nothing applied; run {run.id} kept (nsbox changes {run.id})\n")
        return 0
    try:
        # Protected paths were never offered; select drops them (and what lies in them).
        selected, _ = applying.select(applying.with_new_parents(entries, chosen), (), (), home,
                                      run.workspace)
        done, not_applicable = applying.apply(run, selected, started_ns=meta["started_ns"])
    except applying.ApplyError as err:
        out.write(f"nsbox: {err} (nsbox apply {run.id} --force)\nnsbox: run {run.id} kept\n")
        return 1
    except OSError as err:
        out.write(f"nsbox: apply stopped: {err}; `nsbox changes {run.id}` shows what is left\n")
        return 1
    left = [e for e in entries if e not in done]
    out.write(f"nsbox: applied {overlay.summary(done)} to {run.workspace}\n")
    for path, why in not_applicable:
        out.write(f"nsbox:   not applied ({why}): {path}\n")
    if left:
        overlay.save_manifest(run, left)
        out.write(f"nsbox: run {run.id} kept: {len(left)} change(s) not applied "
                  f"(nsbox changes {run.id})\n")
    else:
        overlay.discard(run)
        out.write(f"nsbox: run {run.id} removed\n")
    return 0
