"""The sdist and wheel build with the installed backend, and the wheel works in a fresh venv."""

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("nsbox", "seccomp_profiles", "pyproject.toml", "README.md", "LICENSE")


def _has_module(name: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {name}"],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    if not _has_module("build"):
        pytest.skip("`build` is not installed (pip install -e '.[test]')")
    src = tmp_path_factory.mktemp("src")  # a copy: the checkout may not be writable
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "-o", str(out),
                        str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def test_sdist_and_wheel_carry_the_data(dist):
    wheel = next(dist.glob("nsbox-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "nsbox/py.typed" in names
    assert "nsbox/seccomp_profiles/default.json" in names
    sdist = next(dist.glob("nsbox-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        assert any(n.endswith("nsbox/py.typed") for n in tar.getnames())


def test_wheel_works_in_a_fresh_venv(dist, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=60)
    wheel = next(dist.glob("nsbox-*.whl"))
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    nsbox = str(venv / "bin" / "nsbox")
    # The command is nsbox's own script: no pip wrapper's `import re` on each start.
    script = Path(nsbox).read_text()
    assert script.startswith(f"#!{venv}/bin/python") and "\nimport re\n" not in script, script
    ws = tmp_path / "ws"
    ws.mkdir()
    version = subprocess.run([nsbox, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
    check = subprocess.run([nsbox, "check"], capture_output=True, text=True, cwd=ws)
    assert check.returncode in (0, 1) and "Traceback" not in check.stderr, check.stderr
    assert "verdict" in check.stdout
    run = subprocess.run([nsbox, "exec", "--", "true"], capture_output=True, text=True, cwd=ws)
    assert run.returncode == 0, run.stderr
    help_ = subprocess.run([nsbox], capture_output=True, text=True)
    assert help_.returncode == 0 and "Traceback" not in help_.stderr
