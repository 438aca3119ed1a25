"""Costs and limits that must not grow with the host: big environments, big launch
requests and big directories beside hidden paths work through the library as they do
through the CLI (functional checks; the benchmark measures the time)."""

import os
import subprocess
import time

import pytest

import nsbox
from conftest import needs_landlock, nsbox_cmd
from nsbox.plan import name_matches
from nsbox.policy.model import Policy

COUNT = "env | grep -c '^BIG_'"


def big_env(count: int = 5000, size: int = 100) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIG_")}
    env.update({f"BIG_{i}": "x" * size for i in range(count)})
    return env


@pytest.mark.parametrize("prewarm", [True, False])
def test_a_five_thousand_variable_environment_reaches_the_command(workspace, prewarm):
    env = big_env()  # about 550 KiB: more than a unix socket record holds
    policy = Policy(workspace=str(workspace))
    for _ in range(2):  # the second run may take a spare built from the first
        r = nsbox.run(["sh", "-c", COUNT], policy=policy, env=env, prewarm=prewarm)
        assert (r.returncode, r.stdout, r.stderr) == (0, b"5000\n", b"")


def test_a_session_takes_a_big_environment_at_start_and_per_command(workspace):
    with nsbox.Session(Policy(workspace=str(workspace)), env=big_env(3000)) as session:
        assert session.run(["sh", "-c", COUNT]).stdout == b"3000\n"
        r = session.run(["sh", "-c", COUNT], env=big_env(5000))
        assert (r.returncode, r.stdout) == (0, b"5000\n")


def _crowded(directory, count: int) -> None:
    directory.mkdir(exist_ok=True)
    for i in range(count):
        (directory / f"entry-{i}").write_text("ordinary\n")


@pytest.mark.parametrize("isolation", ["full", pytest.param("landlock", marks=needs_landlock(6))])
def test_a_hidden_path_among_three_thousand_siblings(var_tmp, workspace, isolation):
    crowd = var_tmp / "crowd"
    _crowded(crowd, 3000)
    (crowd / "secret").write_text("SECRET\n")
    policy = Policy(workspace=str(workspace), isolation=isolation,
                    hidden=Policy().hidden + (str(crowd / "secret"),))
    script = f"echo started; cat {crowd}/entry-2999; cat {crowd}/secret"
    r = nsbox.run(["sh", "-c", script], policy=policy)
    assert r.stdout.startswith(b"started\nordinary\n"), r.stderr
    assert b"SECRET" not in r.stdout and r.returncode != 0
    assert b"Permission denied" in r.stderr or b"No such file" in r.stderr
    assert (crowd / "secret").read_text() == "SECRET\n"


def test_a_big_home_is_listed_once_while_it_is_unchanged(var_tmp, workspace):
    """The `*token*`-style patterns in ~ need a listing; it is remembered while the home's
    ctime stays, and a file added later is still hidden on the next run."""
    home = var_tmp / "home"
    _crowded(home, 2000)
    (home / "api_token.txt").write_text("SECRET-1\n")
    # Remembered only once the directory has been still for a while (ctime ticks are coarse).
    time.sleep(name_matches.SETTLED_NS / 1e9 + 0.2)
    env = dict(os.environ, HOME=str(home))
    argv = nsbox_cmd("exec", "--workspace", str(workspace), "--", "sh", "-c",
                     f"echo started; cat {home}/api_token.txt {home}/new_token.txt")
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert first.stdout.startswith("started") and "SECRET" not in first.stdout, first.stderr
    state = home / ".local" / "state" / "nsbox" / name_matches.FILE
    assert state.exists()  # the listing was remembered, in nsbox's own state directory
    (home / "new_token.txt").write_text("SECRET-2\n")  # the home's ctime moves
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert second.stdout.startswith("started"), second.stderr
    assert "SECRET" not in second.stdout
    assert "Permission denied" in second.stderr


def test_full_isolation_hides_without_a_rule_per_sibling(var_tmp, workspace):
    """With mounts the mask hides the path: the Landlock ruleset does not grow with the
    directory around it (it used to hold one rule per sibling)."""
    from nsbox.plan import host, prepare

    sizes = {}
    for count in (10, 3000):
        crowd = var_tmp / f"crowd{count}"
        _crowded(crowd, count)
        (crowd / "secret").write_text("SECRET\n")
        policy = Policy(workspace=str(workspace), hidden=(str(crowd / "secret"),))
        plan = prepare.compile_plan(["true"], policy, host=host.facts()).plan
        masks = [s for s in plan.mounts if s.target == str(crowd / "secret")]
        assert [(s.kind, s.mode) for s in masks] == [("mask_file", 0)]  # refuses access
        sizes[count] = len(plan.landlock.paths) if plan.landlock is not None else 0
    assert sizes[3000] == sizes[10]
