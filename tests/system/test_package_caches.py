"""Package managers work in the default sandbox and cache in nsbox's own area, never in
the host's caches: npm, pip, uv and pipx for real and offline, as root and as a user.

Every run uses a fake HOME under /var/tmp (the sandbox's /tmp is private) with the
default XDG places, so the area is HOME/.cache/nsbox/packages. Each test checks that
the command really ran (its output), and that the home's own caches stay absent.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import pytest

import nsbox
from conftest import needs_landlock, nsbox_cmd
from nsbox.plan import caches
from nsbox.policy import defaults
from nsbox.policy.model import Policy

PY = "/usr/bin/python3"
NPM = shutil.which("npm")
NODE = shutil.which("node")
UV = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
PIPX = shutil.which("pipx", path=os.path.dirname(sys.executable)) or shutil.which("pipx")
NAMES = [name for name, _ in defaults.CACHE_ENV]
HOST_CACHES = (".cache/pip", ".npm", ".cache/uv", ".local/share/pipx", ".local/pipx",
               ".cache/pipx")


@pytest.fixture
def place():
    """A fake home, two workspaces and a directory of packages, all under /var/tmp."""
    base = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-pkg-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    for name in ("home", "ws1", "ws2", "dist"):
        os.makedirs(os.path.join(base, name))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def host_env(home: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "PIP_", "UV_", "PIPX_", "npm_config_", "NPM_CONFIG_"))
           and k not in NAMES}
    env["HOME"] = home
    return env


def run(place, ws, script, *opts, timeout=120):
    argv = nsbox_cmd("exec", "--workspace", os.path.join(place, ws), *opts, "--",
                     "sh", "-c", "echo STARTED; " + script)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env=host_env(os.path.join(place, "home")), cwd=os.path.join(place, ws))
    assert r.stdout.startswith("STARTED"), (r.returncode, r.stdout, r.stderr)
    return r


def area(place, mode="shared", ws="ws1") -> str:
    base = os.path.join(place, "home", ".cache", "nsbox")
    return caches.leaf_path(base, mode, os.path.join(place, ws))


def assert_host_caches_untouched(place):
    home = os.path.join(place, "home")
    for rel in HOST_CACHES:
        assert not os.path.lexists(os.path.join(home, rel)), rel
    # Only nsbox's own directories appeared in the home.
    assert set(os.listdir(home)) <= {".cache", ".local"}
    assert set(os.listdir(os.path.join(home, ".cache"))) <= {"nsbox"}


# ---------------------------------------------------------------- packages to install

def npm_tarball(dist: str) -> str:
    """What `npm pack` makes, without npm: package/package.json and package/index.js."""
    path = os.path.join(dist, "nsbox-probe-pkg-1.0.0.tgz")
    files = {"package/package.json": json.dumps({"name": "nsbox-probe-pkg",
                                                 "version": "1.0.0", "main": "index.js"}),
             "package/index.js": "module.exports = 42;\n"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def wheel(dist: str) -> str:
    """A pure-Python wheel with a console script, `nsbox-probe`, that prints probe-ran."""
    path = os.path.join(dist, "nsbox_probe-1.0-py3-none-any.whl")
    info = "nsbox_probe-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("nsbox_probe/__init__.py", "VALUE = 42\ndef main():\n    print('probe-ran')\n")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: nsbox-probe\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/entry_points.txt",
                   "[console_scripts]\nnsbox-probe = nsbox_probe:main\n")
        z.writestr(f"{info}/RECORD", "")
    return path


# ---------------------------------------------------------------- npm

@pytest.mark.skipif(NPM is None or NODE is None, reason="npm and node are not installed")
def test_npm_install_works_and_a_fresh_workspace_finds_its_cache(place):
    tgz = npm_tarball(os.path.join(place, "dist"))
    for ws in ("ws1", "ws2"):
        with open(os.path.join(place, ws, "package.json"), "w") as f:
            json.dump({"name": ws, "version": "1.0.0",
                       "dependencies": {"nsbox-probe-pkg": f"file:{tgz}"}}, f)
    r = run(place, "ws1", "npm install --offline --no-audit --no-fund >/dev/null && "
                          "node -e 'console.log(\"value\", require(\"nsbox-probe-pkg\"))' && "
                          "npm config get cache && npm cache ls")
    assert r.returncode == 0, r.stderr
    npm_dir = os.path.join(area(place), "npm")
    assert f"value 42\n{npm_dir}\n" in r.stdout
    assert "nsbox-probe-pkg-1.0.0.tgz" in r.stdout
    assert os.path.isdir(os.path.join(npm_dir, "_cacache"))
    # A fresh workspace: the same (shared) cache already holds the package.
    r = run(place, "ws2", "npm cache ls")
    assert r.returncode == 0 and "nsbox-probe-pkg-1.0.0.tgz" in r.stdout, r.stderr
    assert_host_caches_untouched(place)


@pytest.mark.skipif(NPM is None, reason="npm is not installed")
def test_npm_with_the_cache_off_has_nowhere_to_write(place):
    tgz = npm_tarball(os.path.join(place, "dist"))
    with open(os.path.join(place, "ws1", "package.json"), "w") as f:
        json.dump({"name": "ws1", "dependencies": {"nsbox-probe-pkg": f"file:{tgz}"}}, f)
    r = run(place, "ws1", 'echo "cache=${npm_config_cache:-unset}"; '
                          "npm install --offline --no-audit --no-fund; echo rc=$?",
            "--cache", "off")
    assert "cache=unset" in r.stdout
    assert "rc=0" not in r.stdout  # ~/.npm is read-only: this is what the cache fixes
    assert not os.path.exists(os.path.join(place, "home", ".cache", "nsbox", "packages"))
    assert_host_caches_untouched(place)


# ---------------------------------------------------------------- pip, uv, pipx

SERVER = """import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):  # cacheable, as an index's files are
        self.send_header("Cache-Control", "max-age=3600")
        super().end_headers()
    def log_message(self, *args):
        pass
handler = functools.partial(Handler, directory=sys.argv[1])
http.server.HTTPServer(("127.0.0.1", 8765), handler).serve_forever()
"""


def test_pip_caches_in_the_area(place):
    wheel(os.path.join(place, "dist"))
    dist = os.path.join(place, "dist")
    with open(os.path.join(place, "serve.py"), "w") as f:
        f.write(SERVER)
    # pip caches what it downloads over HTTPS or from a trusted host: serve the wheel
    # from the sandbox's own loopback.
    script = (f"{PY} -m venv v && v/bin/pip cache dir && "
              f"({PY} {place}/serve.py {dist} & srv=$!; "
              "for i in $(seq 50); do v/bin/python -c 'import urllib.request as u; "
              "u.urlopen(\"http://127.0.0.1:8765/\")' 2>/dev/null && break; sleep 0.1; done; "
              "v/bin/pip install -q --disable-pip-version-check --no-index "
              "--trusted-host 127.0.0.1 --find-links http://127.0.0.1:8765/ nsbox-probe; "
              "kill $srv) && "
              "v/bin/python -c 'import nsbox_probe; print(\"value\", nsbox_probe.VALUE)'")
    r = run(place, "ws1", script)
    assert r.returncode == 0, r.stderr
    pip_dir = os.path.join(area(place), "cache", "pip")
    assert f"{pip_dir}\n" in r.stdout and "value 42" in r.stdout
    cached = [f for _, _, files in os.walk(pip_dir) for f in files]
    assert cached, "pip wrote nothing to its cache in the area"
    assert_host_caches_untouched(place)


@pytest.mark.skipif(UV is None, reason="uv is not installed (tests/setup.sh venv installs it)")
@pytest.mark.parametrize("mode", ["shared", "workspace"])
def test_uv_installs_offline_and_the_second_workspace_is_served_from_the_cache(place, mode):
    wheel(os.path.join(place, "dist"))
    script = (f"{UV} venv -q --python {PY} u && VIRTUAL_ENV=$PWD/u {UV} pip install --offline "
              f"--no-index --find-links {place}/dist nsbox-probe 2>&1 && "
              "u/bin/python -c 'import nsbox_probe; print(\"value\", nsbox_probe.VALUE)'")
    first = run(place, "ws1", script, "--cache", mode)
    second = run(place, "ws2", script, "--cache", mode)
    for r in (first, second):
        assert r.returncode == 0 and "value 42" in r.stdout, r.stdout + r.stderr
        assert "hardlink" not in r.stdout  # UV_LINK_MODE=copy: the area is another mount
    assert "Prepared 1 package" in first.stdout
    # Shared: the first workspace's run left the wheel unpacked in the cache.
    assert ("Prepared 1 package" in second.stdout) is (mode == "workspace")
    assert os.listdir(os.path.join(area(place, mode, "ws1"), "cache", "uv"))
    assert_host_caches_untouched(place)


@pytest.mark.skipif(PIPX is None, reason="pipx is not installed (tests/setup.sh venv installs it)")
def test_pipx_run_from_a_local_wheel(place):
    whl = wheel(os.path.join(place, "dist"))
    # pipx's shared libraries venv would upgrade pip from an index: none offline.
    r = run(place, "ws1", f"PIP_NO_INDEX=1 {PIPX} run --spec {whl} nsbox-probe")
    assert r.returncode == 0 and "probe-ran" in r.stdout, r.stderr
    assert os.listdir(os.path.join(area(place), "pipx"))
    assert_host_caches_untouched(place)


# ---------------------------------------------------------------- modes and mounts

CHECK = ('echo "xdg=$XDG_CACHE_HOME"; ls "$XDG_CACHE_HOME"; '
         'touch "$XDG_CACHE_HOME/from-$(basename $PWD)"')


@pytest.mark.parametrize("isolation", ["full", pytest.param("landlock", marks=needs_landlock(1))])
@pytest.mark.parametrize("mode", ["shared", "workspace"])
def test_shared_areas_are_shared_and_workspace_areas_are_not(place, mode, isolation):
    first = run(place, "ws1", CHECK, "--cache", mode, "--isolation", isolation)
    second = run(place, "ws2", CHECK, "--cache", mode, "--isolation", isolation)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert f"xdg={area(place, mode, 'ws1')}/cache\n" in first.stdout
    assert f"xdg={area(place, mode, 'ws2')}/cache\n" in second.stdout
    assert ("from-ws1" in second.stdout) is (mode == "shared")
    assert os.path.exists(os.path.join(area(place, mode, "ws1"), "cache", "from-ws1"))
    assert_host_caches_untouched(place)


def test_off_sets_no_variable_and_mounts_nothing(place):
    r = run(place, "ws1", "env; cat /proc/self/mountinfo", "--cache", "off")
    assert r.returncode == 0, r.stderr
    for name in NAMES:
        assert f"\n{name}=" not in r.stdout
    assert "/packages" not in r.stdout
    assert not os.path.exists(os.path.join(place, "home", ".cache", "nsbox", "packages"))


@pytest.mark.parametrize("isolation", ["full", pytest.param("landlock", marks=needs_landlock(1))])
def test_only_the_leaf_is_writable(place, isolation):
    home = os.path.join(place, "home")
    nsbox_cache = os.path.join(home, ".cache", "nsbox")
    script = "; ".join(f"touch {p} 2>/dev/null && echo WROTE {p}" for p in (
        f"{nsbox_cache}/x", f"{nsbox_cache}/packages/x", f"{nsbox_cache}/seccomp/x",
        f"{nsbox_cache}/packages/workspaces/x", f"{home}/.cache/x")) + (
        f"; ln -s {home} {nsbox_cache}/packages/workspaces/evil 2>/dev/null && echo LINKED"
        f"; touch {area(place)}/ok && echo LEAF")
    r = run(place, "ws1", script, "--isolation", isolation)
    assert "LEAF" in r.stdout and "WROTE" not in r.stdout and "LINKED" not in r.stdout, r.stdout


def test_a_planted_symlink_where_a_workspace_area_goes_is_refused(place):
    leaf = area(place, "workspace", "ws1")
    os.makedirs(os.path.dirname(leaf))
    os.symlink(os.path.join(place, "home"), leaf)
    r = subprocess.run(nsbox_cmd("exec", "--workspace", os.path.join(place, "ws1"), "--cache",
                                 "workspace", "--", "touch", os.path.join(place, "home", "x")),
                       capture_output=True, text=True, env=host_env(os.path.join(place, "home")))
    assert r.returncode == 125 and "not a directory owned by you" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(place, "home", "x"))


def test_the_callers_variables_are_replaced_and_setenv_wins(place):
    home = os.path.join(place, "home")
    env = dict(host_env(home), PIP_CACHE_DIR=f"{home}/.cache/pip", NPM_CONFIG_CACHE=f"{home}/.npm")
    script = 'echo "$PIP_CACHE_DIR|${NPM_CONFIG_CACHE:-gone}|$npm_config_cache|$UV_CACHE_DIR"'
    argv = nsbox_cmd("exec", "--workspace", os.path.join(place, "ws1"), "--setenv",
                     "UV_CACHE_DIR=/mine", "--", "sh", "-c", script)
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    leaf = area(place)
    assert r.stdout == f"{leaf}/cache/pip|gone|{leaf}/npm|/mine\n", r.stderr


def test_policy_show_reports_the_area(place):
    r = subprocess.run(nsbox_cmd("policy", "show", "--workspace", os.path.join(place, "ws1"),
                                 "--cache", "workspace"),
                       capture_output=True, text=True, env=host_env(os.path.join(place, "home")))
    report = json.loads(r.stdout)
    assert report["policy"]["cache"] == "workspace"
    assert report["resolved"]["cache"]["path"] == area(place, "workspace", "ws1")
    assert report["resolved"]["cache"]["env"]["npm_config_cache"].endswith("/npm")
    assert area(place, "workspace", "ws1") in report["resolved"]["writable"]


# ---------------------------------------------------------------- trust

def write_policy(place, ws, text):
    os.makedirs(os.path.join(place, ws, ".nsbox"), exist_ok=True)
    with open(os.path.join(place, ws, ".nsbox", "policy.toml"), "w") as f:
        f.write(text)


VARS = 'echo "cache=${npm_config_cache:-unset}"'


def test_an_untrusted_file_cannot_turn_the_cache_on(place):
    write_policy(place, "ws1", '[cache]\nmode = "shared"\n')
    for opts in (("--cache", "off"), ("--preset", "read-only")):
        r = run(place, "ws1", VARS, *opts)
        assert "cache=unset" in r.stdout, r.stderr
        assert "(untrusted: widening keys ignored: cache)" in r.stderr
    write_policy(place, "ws1", '[cache]\nmode = "workspace"\n')
    r = run(place, "ws1", VARS, "--cache", "off")
    assert "cache=unset" in r.stdout and "widening keys ignored: cache" in r.stderr


def test_an_untrusted_file_may_narrow_the_cache(place):
    write_policy(place, "ws1", '[cache]\nmode = "workspace"\n')
    r = run(place, "ws1", VARS)
    assert f"cache={area(place, 'workspace', 'ws1')}/npm" in r.stdout
    assert "(untrusted: narrows only)" in r.stderr
    write_policy(place, "ws1", 'cache = "off"\n')
    r = run(place, "ws1", VARS)
    assert "cache=unset" in r.stdout and "(untrusted: narrows only)" in r.stderr


def test_a_trusted_file_may_turn_the_cache_on(place):
    write_policy(place, "ws1", 'preset = "read-only"\n[cache]\nmode = "shared"\n')
    env = dict(host_env(os.path.join(place, "home")))
    subprocess.run(nsbox_cmd("trust", os.path.join(place, "ws1", ".nsbox", "policy.toml")),
                   check=True, capture_output=True, env=env)
    r = run(place, "ws1", VARS)
    assert f"cache={area(place)}/npm" in r.stdout and "(trusted)" in r.stderr


# ---------------------------------------------------------------- library and CLI

def test_a_session_command_with_its_own_environment_keeps_the_cache(place, monkeypatch):
    home = os.path.join(place, "home")
    for name in list(os.environ):
        if name.startswith("XDG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", home)
    policy = Policy(workspace=os.path.join(place, "ws1"))
    with nsbox.Session(policy) as session:
        r = session.run(["sh", "-c", "echo started; echo $npm_config_cache"],
                        env={"PATH": os.environ["PATH"], "HOME": home,
                             "npm_config_cache": f"{home}/.npm"})
    assert r.stdout.decode() == f"started\n{area(place)}/npm\n", r.stderr


def test_cache_info_and_clear(place):
    env = host_env(os.path.join(place, "home"))
    run(place, "ws1", 'mkdir -p "$npm_config_cache/x" && head -c 100000 /dev/zero > '
                      '"$npm_config_cache/x/blob" && ln -s / "$npm_config_cache/root"')
    ws = os.path.join(place, "ws1")
    r = subprocess.run(nsbox_cmd("cache", "info", "--workspace", ws, "--json"),
                       capture_output=True, text=True, env=env)
    report = json.loads(r.stdout)
    assert report["mode"] == "shared" and report["shared"]["path"] == area(place)
    assert report["shared"]["bytes"]["npm"] >= 100000
    r = subprocess.run(nsbox_cmd("cache", "info", "--workspace", ws), capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and f"shared: {area(place)}" in r.stdout and "npm" in r.stdout
    r = subprocess.run(nsbox_cmd("cache", "clear"), capture_output=True, text=True, env=env,
                       cwd=ws)
    assert r.returncode == 0 and "freed" in r.stdout, r.stderr
    assert os.listdir(area(place)) == ["cache"]  # XDG_CACHE_HOME, made again, empty
    assert os.listdir(os.path.join(area(place), "cache")) == []
    assert os.path.isdir("/usr")  # the symlink to / went, not what it pointed to
