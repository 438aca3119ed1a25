"""One compiled session plan for many sandboxes that differ only in a new, empty workspace.

Compiling a plan reads the host (hidden paths, protected names, mounts): about
2 ms of CPU. Sandboxes started back to back with one policy, each in a fresh
empty directory of one parent, get plans that differ only in that directory's
path, so the plan is compiled once and moved to each new workspace. A plan is
moved only while it is younger than `max_age` seconds and every host path its
mounts and Landlock rules hold is still the same file (device, inode), so a
sandbox sees the host as a session started that much earlier does. Plans a
move could change are never reused: landlock-only (a private TMPDIR each),
network allowlist (a proxy each), non-default limits (cgroups), overlays, and
workspaces with anything in them.
"""

import os
import time

from nsbox.plan import caches, prepare, watch
from nsbox.plan.types import FULL
from nsbox.policy.limits import Limits
from nsbox.record import Record, fields, is_record, replace

# Mount steps that hold a host path (source or target) as it was when compiled.
_HOST_PATH_KINDS = ("bind_ro", "bind_rw", "pin", "mask_dir", "mask_file")


class Template(Record):
    """A compiled session plan and where its workspace appears in it."""
    compiled: prepare.Compiled
    workspace: str
    rewriters: tuple  # (field name, new workspace -> its value) for the plan's fields
    # that hold the workspace's path (policy aside: the caller's replaces it)
    paths: tuple  # host paths the plan holds, outside the workspace
    identity: tuple  # (device, inode) of each of `paths` when compiled
    compiled_at: float  # time.monotonic()


def template(policy, host, max_age: float) -> "Template | None":
    """The session plan for `policy` (whose workspace must be a new empty directory),
    kept for reuse; None when a plan of this kind cannot be moved to another workspace.
    Raises what prepare.compile_plan raises."""
    done = prepare.compile_plan(("nsbox-session",), policy, None, None, session=True, host=host)
    plan, guard, workspace = done.plan, done.guard, done.workspace
    if (plan.isolation != FULL or plan.private_tmp is not None or plan.net_proxy is not None
            or plan.overlay is not None or plan.hidden or os.listdir(workspace)
            or guard.created or guard.repos or guard.undo or guard.extra_writable
            or done.roots != (workspace,)):
        return None
    if plan.limits is not None and (plan.limits.limits != Limits() or plan.limits.cgroups):
        return None
    caches.create(done.cache)  # as prepare does before a plan's first run
    paths = tuple(p for p in _held_paths(plan) if not _under(p, workspace))
    rewriters = tuple((f.name, r) for f in fields(plan)
                      if f.name != "policy" and (r := _rewriter(getattr(plan, f.name), workspace)))
    made = Template(compiled=done, workspace=workspace, rewriters=rewriters, paths=paths,
                    identity=_identity(paths), compiled_at=time.monotonic())
    # Every place the workspace appears must be one `moved` rewrites.
    probe = _moved_plan(made, "/\0probe")
    if any(workspace in repr(getattr(probe, f.name)) for f in fields(probe) if f.name != "policy"):
        return None
    return made if max_age > 0 else None


def fresh(made: Template, max_age: float) -> bool:
    """Whether `made` may still be used: young enough, and the host paths it holds unchanged."""
    return (time.monotonic() - made.compiled_at < max_age
            and _identity(made.paths) == made.identity)


def moved(made: Template, policy, workspace: str):
    """The template's plan for `policy` in `workspace` (a new empty directory beside the
    template's), with its watch started; the policy must be the template's but for
    its workspace."""
    workspace = os.path.realpath(workspace)
    if (os.path.dirname(workspace) != os.path.dirname(made.workspace)
            or policy.with_changes(workspace=made.workspace) != made.compiled.plan.policy
            or os.listdir(workspace)):
        raise ValueError("a template plan moves only to a new empty workspace beside its own, "
                         "for the same policy")
    plan = _moved_plan(made, workspace)
    watched = watch.start((workspace,), tuple(_swap(p, made.workspace, workspace)
                                              for p in made.compiled.guard.watched), (), ())
    # env copied: no session's changes to it can reach another's
    return replace(plan, policy=policy, env=dict(plan.env), watch=watched)


def _moved_plan(made: Template, workspace: str):
    return replace(made.compiled.plan, **{name: rewrite(workspace)
                                          for name, rewrite in made.rewriters})


def _rewriter(value, old: str):
    """A function new -> `value` with every path at or under `old` moved under `new`
    (through records, tuples, lists and dicts), or None when `value` holds no such path.
    Built once per template, so a move rebuilds only what holds the workspace."""
    if isinstance(value, str):
        if not _under(value, old):
            return None
        rest = value[len(old):]
        return lambda new: new + rest
    if isinstance(value, (tuple, list)):
        items = list(value)
        subs = [(i, r) for i, r in enumerate(_rewriter(v, old) for v in items) if r]
        if not subs:
            return None
        kind = type(value)
        make = (lambda xs: kind(*xs)) if hasattr(value, "_fields") else kind

        def rebuilt(new):
            xs = list(items)
            for i, r in subs:
                xs[i] = r(new)
            return make(xs)
        return rebuilt
    if isinstance(value, dict):
        subs = {k: (_rewriter(k, old), _rewriter(v, old)) for k, v in value.items()}
        subs = {k: rs for k, rs in subs.items() if rs[0] or rs[1]}
        if not subs:
            return None

        def rebuilt(new):
            out = {}
            for k, v in value.items():
                rk, rv = subs.get(k, (None, None))
                out[rk(new) if rk else k] = rv(new) if rv else v
            return out
        return rebuilt
    if is_record(value):
        subs = [(f.name, r) for f in fields(value) if (r := _rewriter(getattr(value, f.name), old))]
        if not subs:
            return None
        return lambda new: replace(value, **{name: r(new) for name, r in subs})
    return None  # any other object: template() checks that none holds the workspace


def _swap(path: str, old: str, new: str) -> str:
    if path == old:
        return new
    if path.startswith(old + "/"):
        return new + path[len(old):]
    return path


def _under(path, root: str) -> bool:
    return isinstance(path, str) and (path == root or path.startswith(root + "/"))


def _held_paths(plan) -> list:
    paths = []
    for step in plan.mounts:
        if step.kind in _HOST_PATH_KINDS:
            paths.extend(p for p in (step.source, step.target) if p)
    if plan.landlock is not None:
        paths.extend(rule.path for rule in plan.landlock.paths)
    return list(dict.fromkeys(paths))


def _identity(paths) -> tuple:
    out = []
    for path in paths:
        try:
            st = os.lstat(path)
            out.append((st.st_dev, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)
