"""A policy file that was found, read once: its layer, narrowed unless the user trusted
its exact bytes, and the Decision about it (see nsbox.policy.files, which finds it).
"""

import os

from nsbox.policy.files import workspace_file


class Decision:
    """What was decided about the policy file of a run, for stderr, logs and run records."""

    __slots__ = ("path", "real_path", "sha256", "trusted", "ignored", "reason")

    def __init__(self, path: str, real_path: str, sha256: str, trusted: bool,
                 ignored: tuple, reason: str):
        self.path = path  # absolute, as found
        self.real_path = real_path
        self.sha256 = sha256  # of the exact bytes read
        self.trusted = trusted
        self.ignored = ignored  # TOML names of the widening settings left out
        self.reason = reason

    def as_dict(self) -> dict:
        return {"path": self.real_path, "sha256": self.sha256,
                "decision": "trusted" if self.trusted else "untrusted",
                "reason": self.reason, "ignored": list(self.ignored)}

    def describe(self) -> str:
        """`policy .nsbox/policy.toml (trusted)`, the path relative to the cwd when under it."""
        cwd = os.getcwd()
        shown = os.path.relpath(self.path, cwd) if self.path.startswith(cwd + "/") else self.path
        if self.trusted:
            verdict = "trusted"
        elif self.ignored:
            verdict = f"untrusted: widening keys ignored: {', '.join(self.ignored)}"
        else:
            verdict = "untrusted: narrows only"
        return f"policy {shown} ({verdict})"


def log(decision: Decision) -> None:
    """Report a decision to the "nsbox" logger: a warning when settings were ignored."""
    import logging

    logger = logging.getLogger("nsbox")
    text = f"{decision.describe()}; {decision.reason}; sha256 {decision.sha256}"
    if decision.ignored:
        logger.warning("%s; to apply them, review the file and run `nsbox trust %s`",
                       text, decision.real_path)
    else:
        logger.info("%s", text)


def read_exact(path: str, what: str = "policy file") -> tuple:
    """(real path, bytes) of the file at `path`, both from one open; PolicyError on failure."""
    from nsbox.errors import PolicyError

    try:
        with open(path, "rb") as f:
            data = f.read()
            real = _real_path_of(f.fileno(), path)
    except OSError as err:
        raise PolicyError(f"{what} {path}: {err.strerror}") from None
    return real, data


def widening_keys(data: bytes, source: str) -> list:
    """What a policy file's content would widen over nsbox's defaults (TOML names)."""
    from nsbox.policy import loader, trust

    layer = loader.parse_toml(_text(data, source), source, base=os.getcwd())
    return trust.only_narrowing(layer, loader.merge([]))[1]


def read(path: str, explicit: str | None, flags: dict, env) -> tuple:
    """The file's layer (narrowed unless trusted) and the Decision, from one read of its bytes."""
    from nsbox import trust_store
    from nsbox.policy import loader, trust

    workspace = flags.get("workspace")
    real, data = read_exact(path)
    sha256 = trust_store.digest(data)
    base_dir = os.path.realpath(workspace or os.getcwd())
    layer = loader.parse_toml(_text(data, path), path, base=base_dir)
    root = _root_holding(real, _writable_roots(workspace, flags.get("writable", ())))
    if not explicit and path == workspace_file(workspace):
        reason = "workspace policy file"
    elif root is not None:
        reason = f"in writable root {root}"
    else:
        reason = "outside every writable root"
        return layer, Decision(os.path.abspath(path), real, sha256, True, (), reason)
    if trust_store.is_trusted(real, sha256, env):
        return layer, Decision(os.path.abspath(path), real, sha256, True, (),
                               f"{reason}, trusted with nsbox trust")
    narrowed, ignored = trust.only_narrowing(layer, loader.merge([flags]))
    return narrowed, Decision(os.path.abspath(path), real, sha256, False, tuple(ignored), reason)


def _text(data: bytes, source: str) -> str:
    from nsbox.errors import PolicyError

    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"policy file {source}: not UTF-8 text") from None


def _real_path_of(fd: int, path: str) -> str:
    """The path of the file actually opened (a link swapped later cannot change it)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def _writable_roots(workspace: str | None, writable) -> list:
    return [os.path.realpath(os.path.expanduser(p)) for p in (workspace or os.getcwd(), *writable)]


def _root_holding(path: str, roots: list) -> str | None:
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return root
    return None
