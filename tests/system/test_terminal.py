"""A terminal inside `nsbox exec`, driven through tmux: the caller's terminal shows as
/dev/console, job control and window size work, TIOCSTI stays denied."""

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import marker, pids_running

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
PROMPT = "nsbox-prompt$ "


class Tmux:
    def __init__(self, workspace):
        self.socket = f"nsbox-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        inner = shlex.join([sys.executable, "-m", "nsbox", "exec", "--workspace",
                            str(workspace), "--", "env", f"PS1={PROMPT}",
                            "bash", "--norc", "--noprofile", "-i"])
        self.run("new-session", "-d", "-x", "80", "-y", "24",
                 f"cd {shlex.quote(os.getcwd())} && exec {inner}")
        self.wait_for(lambda text: text.rstrip().endswith(PROMPT.rstrip()))

    def run(self, *args) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-J", "-S", "-200")

    def wait_for(self, found, timeout=5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if found(text):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"timed out; the screen shows:\n{text}")
            time.sleep(0.05)

    def type(self, line: str) -> None:
        self.run("send-keys", "-l", line)
        self.run("send-keys", "Enter")

    def ask(self, command: str, tag: str) -> str:
        """Run `command`; the lines it printed. The quotes keep the typed line from
        matching the markers."""
        self.type(f'echo "BEGIN-"{tag}; {command}; echo "END-"{tag}')
        text = self.wait_for(lambda text: f"\nEND-{tag}\n" in text)
        return text.split(f"\nBEGIN-{tag}\n")[-1].split(f"\nEND-{tag}\n")[0]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


@pytest.fixture
def term(workspace):
    t = None
    try:
        t = Tmux(workspace)
        yield t
    finally:
        if t is not None:
            t.close()


def test_the_terminal_is_dev_console(term):
    assert term.ask("tty", "a").strip() == "/dev/console"
    out = term.ask("python3 -c 'import os; print(os.ttyname(0), os.ttyname(1))'", "b")
    assert out.strip() == "/dev/console /dev/console"
    # Landlock lets the command open it again, with ioctls.
    assert term.ask("stty size < /dev/console && echo opened > /dev/console",
                    "c").split() == ["24", "80", "opened"]


def test_other_terminals_stay_hidden(term):
    # Only the sandbox's own devpts: no other pts of the host to open.
    out = term.ask("ls /dev/pts; grep -c ' /dev/console ' /proc/self/mountinfo", "c")
    assert out.split() == ["ptmx", "1"]


def start_sleep(term) -> str:
    """Type a `sleep` no other process runs and wait until it runs; its duration."""
    duration = marker()
    term.type(f"sleep {duration}")
    deadline = time.monotonic() + 5
    while not pids_running("sleep", duration):
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.05)
    return duration


def wait_sleep_gone(duration: str, why: str) -> None:
    deadline = time.monotonic() + 5
    while pids_running("sleep", duration):
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def test_ctrl_c_ends_the_foreground_job(term):
    duration = start_sleep(term)
    term.run("send-keys", "C-c")
    term.wait_for(lambda text: "^C" in text and text.rstrip().endswith(PROMPT.rstrip()))
    wait_sleep_gone(duration, "sleep survived Ctrl-C")
    assert term.ask("echo alive", "d").strip() == "alive"


def test_ctrl_z_stops_the_foreground_job(term):
    duration = start_sleep(term)
    term.run("send-keys", "C-z")
    term.wait_for(lambda text: "Stopped" in text and text.rstrip().endswith(PROMPT.rstrip()))
    out = term.ask("jobs; kill -9 %1; wait", "e")
    assert "Stopped" in out and f"sleep {duration}" in out
    wait_sleep_gone(duration, "sleep survived kill")


def test_window_resize_reaches_the_command(term):
    assert term.ask("stty size", "f").strip() == "24 80"
    term.run("resize-window", "-x", "100", "-y", "30")
    assert term.ask("stty size", "g").strip() == "30 100"


def test_tiocsti_on_the_terminal_is_denied(term):
    out = term.ask("python3 -c 'import fcntl, termios\n"
                   "try: fcntl.ioctl(0, termios.TIOCSTI, b\"x\"); print(\"done\")\n"
                   "except OSError as e: print(\"errno\", e.errno)'", "h")
    assert out.strip().splitlines()[-1] == "errno 1"
