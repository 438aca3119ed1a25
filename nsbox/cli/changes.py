"""`nsbox changes`, `nsbox diff`, `nsbox apply`, `nsbox discard`: reviewing the runs an
overlay workspace kept (plan/overlay.py), and applying or dropping them (plan/apply.py).
Each function prints its answer and returns the exit status."""

import json
import os
import sys
import time

from nsbox import state
from nsbox.plan import apply as applying
from nsbox.plan import diff_text, overlay

NOT_FOUND = 1
REFUSED = 1


def list_runs(json_output: bool = False) -> int:
    runs = overlay.kept(state.ensure_state_dir())
    if json_output:
        print(json.dumps([{"id": run_id, "workspace": meta.get("workspace"),
                           "command": meta.get("command"),
                           "started_ns": meta.get("started_ns"),
                           "changes": len(entries)} for run_id, meta, entries in runs], indent=2))
        return 0
    if not runs:
        print("no kept runs")
        return 0
    for run_id, meta, entries in runs:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta["started_ns"] / 1e9))
        command = " ".join(meta.get("command", ()))
        print(f"{run_id}  {started}  {overlay.summary(entries)}  {meta['workspace']}  "
              f"$ {command[:60]}")
    return 0


def show(run_id: str, json_output: bool = False) -> int:
    loaded = _load(run_id)
    if loaded is None:
        return NOT_FOUND
    run, meta, entries = loaded
    if json_output:
        # policy_digest: absent for a run whose `nsbox exec` ended before concluding it
        shown = ("workspace", "command", "started_ns", "policy_digest")
        print(json.dumps({"id": run.id, **{k: meta.get(k) for k in shown},
                          "changes": [e.as_dict() for e in entries]}, indent=2))
        return 0
    print(f"run {run.id} in {run.workspace}: {overlay.summary(entries)}")
    for entry in entries:
        print(f"  {_line(entry, run.workspace)}")
    return 0


def _line(entry, workspace: str) -> str:
    mark = {"created": "A", "deleted": "D", "modified": "M", "mode": "m",
            "type changed": "T"}.get(entry.what, "?")
    detail = ""
    if entry.kind == "dir":
        detail = "/"
    elif entry.kind == "symlink" and entry.what != "deleted":
        detail = f" -> {entry.target}"
    if entry.what == "mode":
        detail += f" (mode {entry.mode:o})"
    elif entry.kind == "file" and entry.what != "deleted":
        detail += f" ({entry.size} bytes)"
    protected = " [protected]" if applying.is_protected(entry.path, state.home(),
                                                        workspace) else ""
    return f"{mark} {entry.path}{detail}{protected}"


def diff(run_id: str, paths=()) -> int:
    loaded = _load(run_id)
    if loaded is None:
        return NOT_FOUND
    run, _, entries = loaded
    wanted = [applying._clean(p) for p in paths]
    for entry in entries:
        if wanted and not any(applying._under(entry.path, w) for w in wanted):
            continue
        sys.stdout.write(diff_text.run_diff(run, entry))
    return 0


def apply(run_id: str, paths=(), force: bool = False, include_protected=()) -> int:
    loaded = _load(run_id)
    if loaded is None:
        return NOT_FOUND
    run, meta, entries = loaded
    try:
        chosen, skipped = applying.select(entries, paths, include_protected, state.home(),
                                          run.workspace)
        done, not_applicable = applying.apply(run, chosen, force=force,
                                              started_ns=meta["started_ns"])
    except applying.ApplyError as err:
        sys.stderr.write(f"nsbox: {err}\n")
        return REFUSED
    except OSError as err:
        sys.stderr.write(f"nsbox: apply stopped: {err}; `nsbox changes {run.id}` shows "
                         "what is left\n")
        return REFUSED
    left = [e for e in entries if e not in done]
    print(f"applied {overlay.summary(done)} to {run.workspace}")
    for path in skipped:
        print(f"  not applied (protected): {path}; name it with --include-protected {path}")
    for path, why in not_applicable:
        print(f"  not applied ({why}): {path}")
    if left:
        overlay.save_manifest(run, left)
        print(f"run {run.id} kept: {len(left)} change(s) not applied")
    else:
        overlay.discard(run)
        print(f"run {run.id} removed")
    return 0


def discard(run_ids=(), older_than: str = "") -> int:
    state_dir = state.ensure_state_dir()
    if older_than:
        try:
            seconds = _duration(older_than)
        except ValueError:
            sys.stderr.write(f"nsbox: --older-than needs a duration such as 7d, 12h or 30m; "
                             f"got {older_than!r}\n")
            return 2
        limit = time.time_ns() - seconds * 10**9
        run_ids = list(run_ids) + [run_id for run_id, meta, _ in overlay.kept(state_dir)
                                   if meta.get("started_ns", 0) < limit]
    status = 0
    for run_id in dict.fromkeys(run_ids):
        loaded = _load(run_id)
        if loaded is None:
            status = NOT_FOUND
            continue
        overlay.discard(loaded[0])
        print(f"discarded run {run_id}")
    _sweep_all(state_dir)
    return status


def _sweep_all(state_dir: str) -> None:
    """The empty runs that later `nsbox exec` runs would remove (overlay.sweep) go now."""
    try:
        fd = os.open(overlay.runs_dir(state_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        overlay.sweep(fd, most=None)
    finally:
        os.close(fd)


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def _load(run_id: str):
    try:
        return overlay.load(state.ensure_state_dir(), run_id)
    except LookupError as err:
        sys.stderr.write(f"nsbox: {err.args[0]}\n")
        return None
