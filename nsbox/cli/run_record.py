"""The JSON record of one run (`nsbox exec --json-status FILE`): what ran, under which
policy, which protections were in force, and how it ended."""

from datetime import datetime, timezone
import errno
import json
import os
import signal
import sys

from nsbox.plan import prepare, summary


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def record(argv, policy, plan, started: str, exit_code: int, error: str = "",
           network: dict | None = None, limit_hit=None, policy_file=None, changes=(),
           overlay=None, denials=()) -> dict:
    """`network`: the allowlist proxy's report ({"blocked": [...], "blocked_total": N});
    `limit_hit`: the launch.limits.LimitHit that ended the command, if one did;
    `policy_file`: the policy_files.Decision about the run's policy file, if it had one;
    `overlay`: (manifest, run id) of a run with workspace_mode overlay."""
    out = {
        "command": list(argv),
        "policy_digest": prepare.policy_digest(policy) if policy is not None else None,
        "policy": policy.as_dict() if policy is not None else None,
        "start": started,
        "end": now(),
        "exit_code": exit_code,
        "signal": None,
        "setup_error": error or None,
        # What was enforced: nothing, when the sandbox could not be set up.
        "protections": summary.protections(plan) if plan is not None and not error else None,
        "network": _network(policy, network or {}) if policy is not None else None,
        # limit -> {"value", "mechanism" (cgroup2 | cgroup1 | rlimit | tmpfs | supervisor
        # | userns), "scope" (sandbox | per process)}
        "limits": plan.limits.applied() if plan is not None and plan.limits else None,
        # the sandbox's maxima of per-user kernel counters it shares with the user
        "limit_shares": plan.limits.shares() if plan is not None and plan.limits else None,
        "limit_hit": limit_hit.as_dict() if limit_hit is not None else None,
        # {"path", "sha256", "decision": trusted | untrusted, "reason", "ignored": [...]}
        "policy_file": policy_file.as_dict() if policy_file is not None else None,
        # what changed where code runs later outside the sandbox (see plan/watch.py)
        "changes": [change.as_dict() for change in changes],
        # what the sandbox's walls stopped, one entry per distinct operation with its count
        # (policy.denials.Denial: wall, operation, target, rule, pid, command, count)
        "denials": [denial.as_dict() for denial in denials],
    }
    if overlay is not None:
        # what the run changed in its copy-on-write workspace (plan/overlay.py); run_id
        # names the kept run (None when nothing changed)
        out["run_id"] = overlay[1]
        out["workspace_changes"] = [entry.as_dict() for entry in overlay[0]]
    # PID 1 reports a command killed by signal N as 128+N, as shells do.
    if not error and exit_code > 128:
        try:
            out["signal"] = signal.Signals(exit_code - 128).name
        except ValueError:
            pass
    return out


def _network(policy, report: dict) -> dict:
    """The network mode, and for an allowlist what it allowed and what it refused."""
    out = {"mode": policy.network}
    if policy.network == "allowlist":
        out["allow"] = list(policy.network_allow)
        out["blocked"] = list(report.get("blocked", ()))
        out["blocked_total"] = report.get("blocked_total", len(out["blocked"]))
    return out


# Paths that name a stream (/dev/stdout, /dev/fd/3): opened before the run and written
# through. No sandbox writes there, and a file renamed over them would replace the host's.
_STREAMS = ("/dev/", "/proc/")


def open_target(path: str) -> tuple:
    """(descriptor, name, absolute path) for FILE, taken before the run: FILE's directory and FILE's
    name, or for a stream path the stream opened for writing and None.

    After the run the caller sees the sandbox's mounts, and a sandbox that could write
    the directory may have swapped FILE for a forged record or a symlink: `write` goes
    through the directory and renames a new file over the name. OSError with a one-line
    reason when the directory is missing or not writable or FILE is a directory.
    """

    if path.startswith(_STREAMS):
        return os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC), None, path
    directory, name = os.path.split(path)
    directory = directory or "."
    if name in ("", ".", ".."):
        raise IsADirectoryError(errno.EISDIR, "is a directory")
    try:
        dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"directory {directory} does not exist") from None
    except OSError as err:
        raise OSError(err.errno, f"directory {directory}: {err.strerror}") from None
    try:
        try:
            if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode & 0o170000 == 0o040000:
                raise IsADirectoryError(errno.EISDIR, "is a directory")
        except FileNotFoundError:
            pass
        if not os.access(".", os.W_OK | os.X_OK, dir_fd=dir_fd):
            raise PermissionError(errno.EACCES, f"directory {directory} is not writable")
    except OSError:
        os.close(dir_fd)
        raise
    return dir_fd, name, os.path.abspath(path)


def _check_still_there(dir_fd: int, path: str) -> None:
    """A command that could write above FILE's directory may have moved the directory
    away and built another at its path: the record then is not at `path`. Say so."""

    held = os.fstat(dir_fd)
    try:
        now = os.stat(os.path.dirname(path) or ".")
    except OSError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
        sys.stderr.write(f"nsbox: warning: the directory of --json-status {path} was replaced "
                         "during the run; the record there is not nsbox's. Keep the record "
                         "outside the writable roots\n")


def write(target: tuple, data: dict) -> None:
    """Write the record to `target` (from open_target; its descriptor is closed here):
    to a stream directly, else as a new file renamed over the name, so a forged record
    or a symlink left there is replaced, never written through."""

    fd, name, path = target
    text = json.dumps(data, indent=2) + "\n"
    if name is None:
        with open(fd, "w") as stream:
            stream.write(text)
        return
    tmp = f".nsbox-status-{os.urandom(6).hex()}.tmp"
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o644, dir_fd=fd)
        try:
            with open(out, "w") as new:
                new.write(text)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            _check_still_there(fd, path)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
