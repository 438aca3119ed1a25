"""Inspect's sandbox tools (text_editor(), bash_session(), exec_remote's server, sandbox
MCP servers) in nsbox samples.

Inspect runs these through a helper tree it normally unpacks with `tar` inside the
sandbox, at a fixed path (SANDBOX_TOOLS_DIR, /var/tmp/.da7be258e003d428), as the user the
agent's commands run as; the agent could then rewrite it. Here the provider unpacks it
itself, on the host, once per process, into a directory of its own (0700, under
tempfile.gettempdir()) that no sandbox can write:

- full isolation: every sample gets a private /var/tmp (a tmpfs of its own, so samples
  never meet) with the tree bound read-only at SANDBOX_TOOLS_DIR;
- landlock-only isolation (no mount namespace): the provider maps that fixed path, in
  the arguments of the commands Inspect runs, to the tree's host path, which Landlock
  lets the sandbox read and run but not write.

Either way Inspect's own checks (owner, mode 0700, no link) pass and it finds the tools
installed, so it never writes the tree. The tools' server keeps its socket and logs in
the sample's TMPDIR (INSPECT_SANDBOX_TOOLS_DIR), one server per sample.
"""

import asyncio
import atexit
import logging
import os
import platform
import subprocess
import tempfile

from inspect_ai.util._sandbox._cli import SANDBOX_CLI, SANDBOX_TOOLS_DIR

from nsbox.integrations.workspaces import remove_tree

TOOLS_PREFIX = "nsbox-inspect-tools-"  # the unpacked tree, in tempfile.gettempdir()
STATE_ENV = "INSPECT_SANDBOX_TOOLS_DIR"  # where the tools' server keeps its state
STATE_NAME = ".inspect-sandbox-tools"  # that directory, in the sample's TMPDIR

_logger = logging.getLogger("nsbox")
_tree: str | None = None
_tree_lock = None  # an asyncio.Lock, made on first use
_tree_fd: int | None = None  # flock()ed while this process lives: cleanup keeps the tree


async def tree() -> str | None:
    """The unpacked tree's path, unpacked on first use; None (logged) when Inspect's
    archive for this host cannot be had: the tools then fail as Inspect reports it."""
    global _tree, _tree_lock
    if _tree is not None and os.path.isdir(_tree):
        return _tree
    if _tree_lock is None:
        _tree_lock = asyncio.Lock()
    async with _tree_lock:
        if _tree is None or not os.path.isdir(_tree):
            try:
                archive = await _archive()
                _tree = await asyncio.to_thread(_unpack, archive)
            except Exception as err:  # the tools are optional: bash() and python() work
                _logger.warning("nsbox: Inspect's sandbox tools are unavailable (text_editor, "
                                "bash_session): %s", err)
                return None
    return _tree


async def _archive() -> bytes:
    from inspect_ai.tool._sandbox_tools_utils.sandbox import _open_executable_for_arch

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    musl = platform.libc_ver()[0] != "glibc"
    # Inspect's own lookup: the archive in its package, else downloaded and checked
    # against the digest it pins.
    async with _open_executable_for_arch(arch, musl) as (_name, f):
        return f.read()


def _unpack(archive: bytes) -> str:
    global _tree_fd
    import fcntl

    path = os.path.realpath(tempfile.mkdtemp(prefix=TOOLS_PREFIX))  # 0700, ours
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = subprocess.run(["tar", "-xzf", "-", "-C", path, "--no-same-owner"],
                              input=archive, capture_output=True, timeout=300)
        if done.returncode:
            raise OSError(f"tar could not unpack Inspect's archive: "
                          f"{done.stderr.decode(errors='replace').strip()}")
        launcher = os.path.join(path, os.path.basename(SANDBOX_CLI))
        if not os.path.isfile(launcher):
            raise OSError(f"Inspect's archive has no {os.path.basename(SANDBOX_CLI)}")
    except BaseException:
        os.close(fd)
        remove_tree(path)
        raise
    _tree_fd = fd
    atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    global _tree_fd
    try:
        remove_tree(path)
    except OSError:
        pass  # gone already (removed with its parent directory, say)
    if _tree_fd is not None:
        os.close(_tree_fd)
        _tree_fd = None


def policy_showing(policy, tree_path: str):
    """`policy` with a private /var/tmp and the tree read-only at SANDBOX_TOOLS_DIR
    (full isolation); `policy` as it is where /var/tmp is not a plain directory."""
    parent = os.path.dirname(SANDBOX_TOOLS_DIR)
    if os.path.realpath(parent) != parent or not os.path.isdir(parent):
        _logger.warning("nsbox: %s is not a directory of this host: Inspect's sandbox tools "
                        "are unavailable", parent)
        return policy
    private = policy.private_dirs if parent in policy.private_dirs else (
        policy.private_dirs + (parent,))
    return policy.with_changes(
        private_dirs=private,
        read_only_binds=policy.read_only_binds + (f"{tree_path}:{SANDBOX_TOOLS_DIR}",))


def host_argv(cmd: list, tree_path: str | None, tmpdir: str) -> list:
    """Landlock-only isolation: `cmd` with the paths the harness means inside the sandbox
    turned into their host paths: the tools' fixed path, and /tmp (the sandbox's own:
    the session's private TMPDIR). Only whole arguments are mapped: the text of a
    command line (an agent's bash -c script) is left as it is."""
    out = []
    parent, leaf = os.path.split(SANDBOX_TOOLS_DIR)
    for arg in cmd:
        if tree_path and arg == leaf and out and out[-1] == parent:
            # Inspect's directory checks take the parent and the name as two arguments.
            out[-1:] = list(os.path.split(tree_path))
        elif tree_path and (arg == SANDBOX_TOOLS_DIR or arg.startswith(SANDBOX_TOOLS_DIR + "/")):
            out.append(tree_path + arg[len(SANDBOX_TOOLS_DIR):])
        else:
            out.append(in_tmpdir(arg, tmpdir))
    return out


def in_tmpdir(path, tmpdir: str):
    """/tmp or a path in it -> the same name in `tmpdir`; anything else (a path already
    in `tmpdir`, which commands see as $TMPDIR, included) as it is."""
    if not isinstance(path, str) or not (path == "/tmp" or path.startswith("/tmp/")) or (
            path == tmpdir or path.startswith(tmpdir.rstrip("/") + "/")):
        return path
    return tmpdir + os.path.normpath(path)[len("/tmp"):]


# bash_session()'s requests, which the provider answers itself in both modes
# (inspect_bash_session): no tools server, a terminal made on the host.
BASH_SESSION_METHODS = ("bash_session_new_session", "bash_session")


def tools_method(cmd: list, input) -> str | None:
    """The method of a request to the tools' launcher (`SANDBOX_CLI exec`), else None."""
    if not cmd or cmd[0] != SANDBOX_CLI or list(cmd[1:]) != ["exec"] or input is None:
        return None
    import json

    try:
        return str(json.loads(input).get("method", ""))
    except (ValueError, AttributeError):
        return None


_SOCKET_REACHABLE = ("nsbox: Inspect's tools server (used by exec_remote through sandbox(), "
                     "sandbox MCP servers and the agent bridge) listens on a unix socket, and "
                     "under landlock-only isolation on this kernel (Landlock ABI before 9) "
                     "other samples' commands could connect to it and act in this sample. It "
                     "works with full isolation; bash(), text_editor() and bash_session() work "
                     "here.")


def landlock_refusal(cmd: list, sockets_reachable: bool) -> str | None:
    """Landlock-only isolation: why a tools command cannot run (None when it can)."""
    if cmd and cmd[0] == SANDBOX_CLI and sockets_reachable:
        return _SOCKET_REACHABLE
    return None


def tools_env(cmd: list, env: dict | None, tmpdir: str) -> dict | None:
    """`env` for the tools' launcher: its server's state in the sample's TMPDIR (the tree
    is read-only). Other commands' env is left as it is."""
    if not cmd or cmd[0] != SANDBOX_CLI or (env and STATE_ENV in env):
        return env
    return {STATE_ENV: os.path.join(tmpdir, STATE_NAME), **(env or {})}
