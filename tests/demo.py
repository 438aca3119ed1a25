"""`make demo`: nsbox's main job in four commands, on a scratch workspace."""

import os
import shlex
import socket
import subprocess
import sys
import tempfile

NSBOX = [sys.executable, "-m", "nsbox", "exec"]
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def last_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("nsbox:")]
    return lines[-1].strip() if lines else "(no output)"


def processes(out: str) -> str:
    procs = [ln.split(None, 1) for ln in out.splitlines() if ln.strip()]
    return f"{len(procs)} processes visible: " + ", ".join(
        f"{p[1] if len(p) > 1 else '?'} (pid {p[0]})" for p in procs)


def show(n: int, title: str, ws: str, command: list, expect_ok: bool, evidence=last_line) -> bool:
    print(f"\n{n}/4 {title}")
    print(f"    $ nsbox exec --workspace {ws} -- {shlex.join(command)}")
    r = subprocess.run(NSBOX + ["--workspace", ws, "--"] + command,
                       capture_output=True, text=True)
    ok = (r.returncode == 0) == expect_ok
    verdict = ("allowed" if r.returncode == 0 else "denied") + (
        ", as it should be" if ok else ": UNEXPECTED")
    print(f"    -> {verdict} (exit {r.returncode}): {evidence(r.stdout + r.stderr)}")
    if not ok:
        print("".join(f"       {ln}\n" for ln in (r.stdout + r.stderr).splitlines()))
    return ok


def main() -> int:
    home_target = os.path.join(os.path.expanduser("~"), "nsbox-demo-escape.txt")
    # A server on the host's loopback: the sandbox has its own, empty network.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    connect = (f'import os, socket; e = socket.socket().connect_ex(("127.0.0.1", {port})); '
               f'exit(e and "connect to 127.0.0.1:{port}: " + os.strerror(e))')
    with server, tempfile.TemporaryDirectory(prefix="nsbox-demo-") as ws:
        results = [
            show(1, "a write in the workspace", ws,
                 ["sh", "-c", 'echo "written by the sandbox" > result.txt && cat result.txt'], True),
            show(2, "a write to your home directory", ws,
                 ["sh", "-c", f"echo pwned > {home_target}"], False),
            show(3, f"a connection to a server on the host's 127.0.0.1:{port}", ws,
                 ["python3", "-c", connect], False),
            show(4, "the processes the sandbox can see", ws,
                 ["ps", "-e", "-o", "pid=,comm="], True, processes),
        ]
        on_host = open(os.path.join(ws, "result.txt")).read().strip()
        print(f"\n\nOn the host, {ws}/result.txt says: {on_host!r}")
        print(f"On the host, {home_target} exists: {os.path.exists(home_target)}")
    if not all(results) or os.path.exists(home_target):
        print("\nDemo FAILED: see above.")
        return 1
    venv_bin = os.path.join(os.path.dirname(sys.executable), "nsbox")
    print("\nDemo OK: the workspace is writable; home and the host's network are not.\n"
          "\nnsbox is not on your PATH yet. Either of:\n"
          f"  mkdir -p ~/.local/bin && ln -sf {venv_bin} ~/.local/bin/   # this venv\n"
          f"  pipx install {CHECKOUT}   # a copy in a venv of its own (apt install pipx)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
