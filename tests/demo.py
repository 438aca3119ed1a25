"""`make demo`: nsbox's main job in four commands, on a scratch workspace."""

import os
import shlex
import socket
import subprocess
import sys
import tempfile

NSBOX = [sys.executable, "-m", "nsbox", "exec"]


def show(workspace: str, command: list, expect_ok: bool) -> bool:
    print(f"$ nsbox exec --workspace {workspace} -- {shlex.join(command)}")
    r = subprocess.run(NSBOX + ["--workspace", workspace, "--"] + command,
                       capture_output=True, text=True)
    for line in (r.stdout + r.stderr).splitlines()[-3:]:
        print(f"    {line}")
    ok = (r.returncode == 0) == expect_ok
    verdict = "allowed, as it should be" if expect_ok else "denied, as it should be"
    print(f"  -> exit {r.returncode}: {verdict if ok else 'UNEXPECTED'}\n")
    return ok


def main() -> int:
    home_target = os.path.join(os.path.expanduser("~"), "nsbox-demo-escape.txt")
    # A server on the host's loopback: the sandbox has its own, empty network.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), 3)"
    with server, tempfile.TemporaryDirectory(prefix="nsbox-demo-") as ws:
        results = [
            show(ws, ["sh", "-c", "echo 'written by the sandbox' > result.txt"], True),
            show(ws, ["sh", "-c", f"echo pwned > {home_target}"], False),
            show(ws, ["python3", "-c", connect], False),
            show(ws, ["ps", "-e", "-o", "pid,comm"], True),
        ]
        on_host = open(os.path.join(ws, "result.txt")).read().strip()
        print(f"On the host, {ws}/result.txt says: {on_host!r}")
        print(f"On the host, {home_target} exists: {os.path.exists(home_target)}")
    if all(results) and not os.path.exists(home_target):
        print("\nDemo OK: the workspace is writable; home and the host's network are not.")
        return 0
    print("\nDemo FAILED: see above.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
