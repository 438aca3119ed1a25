"""What a new user meets: help, version, and bad input refused in one or two lines,
with the documented exit code, before anything is created or started."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import WITHOUT_USERNS, needs_blocked_userns

SCRIPT = Path(sys.executable).parent / "nsbox"
NSBOX = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "nsbox"]
MARKER = "nsbox-started-marker"


@pytest.fixture
def place(tmp_path):
    """A workspace, a home with a secret store, and a few bad files outside the workspace."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "existing.txt").write_text("x\n")
    home = tmp_path / "home"
    (home / ".ssh" / "inner").mkdir(parents=True)
    (tmp_path / "bad.json").write_text("{\n")
    (tmp_path / "bad.toml").write_text("preset = [unclosed\n")
    (tmp_path / "unknown.toml").write_text('frobnicate = "yes"\n')
    (tmp_path / "badpreset.toml").write_text('preset = "everything"\n')
    (tmp_path / "a-file").write_text("")
    return tmp_path


def run(args, cwd, home, timeout=60):
    env = dict(os.environ, HOME=str(home), COLUMNS="200")
    return subprocess.run(NSBOX + list(args), cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def touch_marker(ws):
    return ["--", "touch", str(ws / MARKER)]


# (exec options, words the message must contain); every one must give 125.
EXEC_BAD = [
    (["--limit", "wall=1e10"], "too large"),
    (["--limit", "memory=99999999T"], "too large"),
    (["--limit", "cpu=1e9"], "too large"),
    (["--limit", "pids=99999999999"], "too large"),
    (["--limit", "cpu=0"], "cpu"),
    (["--limit", "pids=-1"], "pids"),
    (["--limit", "bogus=1"], "unknown limit"),
    (["--limit", "memory"], "NAME=VALUE"),
    (["--limit", "memory=12Q"], "not a size"),
    (["--limit", "wall=nan"], "not a duration"),
    (["--limit", "cpu=inf"], "cpu"),
    (["--limit", "tmp=0"], "tmp"),
    (["--preset", "nosuch"], "preset"),
    (["--network", "bogus"], "network"),
    (["--isolation", "bogus"], "isolation"),
    (["--seccomp", "nosuch"], "unknown seccomp profile"),
    (["--seccomp", "{tmp}/missing.json"], "does not exist"),
    (["--seccomp", "{tmp}/bad.json"], "malformed JSON"),
    (["--workspace", "{tmp}/missing"], "does not exist"),
    (["--workspace", "{tmp}/a-file"], "not a directory"),
    (["--cwd", "{tmp}/missing"], "does not exist"),
    (["--writable", "{tmp}/missing"], "does not exist"),
    (["--policy", "{tmp}/missing.toml"], "missing.toml"),
    (["--policy", "{tmp}/bad.toml"], "bad.toml"),
    (["--policy", "{tmp}/unknown.toml"], "frobnicate"),
    (["--policy", "{tmp}/badpreset.toml"], "preset"),
    (["--best-effort=maybe"], "switch"),
    (["--clearenv=perhaps"], "switch"),
    (["--no-such-option"], "unknown option"),
    (["--setenv", "NOEQUALS"], "NOEQUALS"),
    (["--allow-domain", "bad domain!"], "bad domain!"),
    (["--network", "host", "--allow-domain", "example.org"], "allowlist"),
    (["--preset", "read-only"], "private one"),
    (["--workspace", "{home}/.ssh/inner"], "hidden path"),
    (["--workspace", "/"], "--allow-broad-workspace"),
    (["--workspace", "{home}"], "home directory"),
    (["--json-status", "{tmp}/missing/status.json"], "--json-status"),
]


@pytest.mark.parametrize("options,words", EXEC_BAD, ids=[" ".join(o) for o, _ in EXEC_BAD])
def test_bad_exec_input_is_refused_before_anything_starts(place, options, words):
    ws, home = place / "ws", place / "home"
    before = sorted(os.listdir(ws))
    options = [o.format(tmp=place, home=home) for o in options]
    r = run(["exec", *options, *touch_marker(ws)], cwd=ws, home=home)
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert words in r.stderr, r.stderr
    assert r.stderr.startswith("nsbox: ") and len(r.stderr.splitlines()) <= 2, r.stderr
    assert not (ws / MARKER).exists()
    assert sorted(os.listdir(ws)) == before


@pytest.mark.parametrize("args", [["exec"], ["exec", "--"], ["exec", "--workspace"]])
def test_exec_without_a_command_or_value_is_125(place, args):
    r = run(args, cwd=place / "ws", home=place / "home")
    assert r.returncode == 125 and "Traceback" not in r.stderr
    assert r.stderr.startswith("nsbox: ")


def test_deleted_current_directory(place):
    gone = place / "gone"
    gone.mkdir()
    env = dict(os.environ, HOME=str(place / "home"))
    script = (f"import os, subprocess, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); "
              f"r = subprocess.run({NSBOX + ['exec', '--', 'true']!r}, capture_output=True, "
              "text=True); print(r.returncode); print(r.stderr, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert r.stdout.strip() == "125"
    assert "no longer exists" in r.stderr and "Traceback" not in r.stderr


# (arguments, words); every one is a usage error of a typer command: exit 2.
OTHER_BAD = [
    (["exce"], "exec"),
    (["--bogus"], "--bogus"),
    (["check", "--json=maybe"], "--json"),
    (["check", "extra"], "extra"),
    (["profiles", "show"], "Missing argument"),
    (["profiles", "frob"], "frob"),
    (["policy", "frob"], "frob"),
    (["trust", "a", "b"], "b"),
    (["trust", "--list", "x"], "--list"),
    (["version", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize("args,words", OTHER_BAD, ids=[" ".join(a) for a, _ in OTHER_BAD])
def test_usage_errors_of_other_commands_are_2(place, args, words):
    ws = place / "ws"
    before = sorted(os.listdir(ws))
    r = run(args, cwd=ws, home=place / "home")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert words in r.stderr
    assert sorted(os.listdir(ws)) == before


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"], ["help"], ["help", "check"],
                                  ["policy"], ["profiles"], ["check", "-h"], ["trust", "--help"],
                                  ["profiles", "list", "-h"], ["policy", "show", "-h"],
                                  ["exec", "-h"], ["exec", "--help"]])
def test_help_exits_0_fits_80_columns(place, args):
    r = run(args, cwd=place / "ws", home=place / "home")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "Traceback" not in r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    assert "<bool>" not in r.stdout


def test_exec_help_shows_every_option(place):
    from nsbox.cli import exec_args

    text = run(["exec", "--help"], cwd=place / "ws", home=place / "home").stdout
    for option in list(exec_args.OPTIONS) + list(exec_args.ALIASES):
        assert option in text


def test_version(place):
    from nsbox import __version__

    for args in (["--version"], ["version"]):
        r = run(args, cwd=place / "ws", home=place / "home")
        assert (r.returncode, r.stdout.strip()) == (0, __version__)


def test_digest_does_not_depend_on_spelling(place):
    import json

    ws = place / "ws"
    digests = set()
    for options in ([], ["-w", "."], ["-w", str(ws)], ["--workspace", f"{ws}/../ws"]):
        r = run(["policy", "show", *options], cwd=ws, home=place / "home")
        assert r.returncode == 0, r.stderr
        digests.add(json.loads(r.stdout)["digest"])
    assert len(digests) == 1


NO_USERNS = WITHOUT_USERNS


@needs_blocked_userns()
def test_userns_blocked_exec_suggests_isolation_auto(place):
    ws = place / "ws"
    env = dict(os.environ, HOME=str(place / "home"))
    r = subprocess.run(NO_USERNS + NSBOX + ["exec", *touch_marker(ws)], cwd=ws, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 125 and "Traceback" not in r.stderr
    assert "--isolation auto" in r.stderr
    assert not (ws / MARKER).exists()
    auto = subprocess.run(NO_USERNS + NSBOX + ["exec", "--isolation", "auto",
                                               *touch_marker(ws)],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=60)
    assert auto.returncode == 0, auto.stderr
    assert (ws / MARKER).exists()


@needs_blocked_userns()
def test_userns_blocked_check_gives_fixes(place):
    import json

    env = dict(os.environ, HOME=str(place / "home"), COLUMNS="80")
    r = subprocess.run(NO_USERNS + NSBOX + ["check", "--json"], env=env, capture_output=True,
                       text=True, timeout=60)
    checks = json.loads(r.stdout)
    userns = checks["user_namespaces"]
    assert userns["status"] == "fail"
    assert userns["fix"] and userns["fix"] not in userns["error"]
    assert "--isolation auto" in userns["instead"]
    table = subprocess.run(NO_USERNS + NSBOX + ["check"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert "Traceback" not in table.stderr
    assert "limit memory" in table.stdout and "{" not in table.stdout
    for name, result in checks.items():
        if result.get("status") == "fail":
            assert result.get("fix"), name


def test_a_bad_profile_creates_no_mount_point_in_the_repository(place):
    ws = place / "ws"
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    shutil.rmtree(ws / ".git" / "hooks")
    bad = place / "unknown-syscall.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["nope"], '
                   '"action": "SCMP_ACT_ERRNO"}]}')
    r = run(["exec", "--workspace", str(ws), "--seccomp", str(bad), *touch_marker(ws)],
            place, place / "home")
    assert r.returncode == 125 and "Traceback" not in r.stderr, r.stderr
    assert not (ws / MARKER).exists() and not (ws / ".git" / "hooks").exists()
