"""Build workloads for the cost of denial reporting, made offline in a workspace.

A C project of many small files with a Makefile (`make -j2`), and a wheel written by hand
with a venv to install it into (`pip install`). Each workload has a reset that returns
the workspace to its state before the run, so that every timed run does the same work.
"""

import base64
import hashlib
import os
import shutil
import subprocess
import zipfile

PACKAGE = "nsbox_bench_pkg"
VERSION = "1.0"


def c_project(directory: str, files: int = 120) -> str:
    """`directory`/cproj: `files` tiny .c files and main.c; `make -j2` builds them all."""
    root = os.path.join(directory, "cproj")
    os.makedirs(root)
    names = [f"unit{i:03d}" for i in range(files)]
    for i, name in enumerate(names):
        _write(os.path.join(root, f"{name}.c"),
               f"int {name}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += k * {i + 1};"
               f" return s; }}\n")
    calls = " + ".join(f"{name}(argc)" for name in names)
    _write(os.path.join(root, "main.c"),
           "".join(f"int {name}(int);\n" for name in names)
           + f"int main(int argc, char **argv) {{ (void)argv; return ({calls}) == -1; }}\n")
    _write(os.path.join(root, "Makefile"),
           "OBJS := $(patsubst %.c,%.o,$(wildcard *.c))\n"
           "prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n"
           "%.o: %.c\n\t$(CC) -O1 -c -o $@ $<\n"
           "clean:\n\trm -f *.o prog\n"
           ".PHONY: clean\n")
    return root


def reset_c_project(root: str) -> None:
    """What `make clean` does, without starting make: the objects and the program go."""
    for name in os.listdir(root):
        if name.endswith(".o") or name == "prog":
            os.unlink(os.path.join(root, name))


def wheel(directory: str, modules: int = 40) -> str:
    """A pure-Python wheel of `modules` modules, zipped by hand (no build backend, no
    network); its RECORD carries real hashes, as pip expects."""
    files = {f"{PACKAGE}/__init__.py": b"VERSION = '1.0'\n"}
    for i in range(modules):
        files[f"{PACKAGE}/mod{i:03d}.py"] = (
            f"def value():\n    return {i}\n\n\nTABLE = {list(range(50))!r}\n").encode()
    info = f"{PACKAGE}-{VERSION}.dist-info"
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {PACKAGE}\n"
                                 f"Version: {VERSION}\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: nsbox-bench\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = os.path.join(directory, f"{PACKAGE}-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def venv(directory: str, python: str) -> str:
    """`directory`/venv, made by `python -m venv` with its own pip (ensurepip, offline)."""
    path = os.path.join(directory, "venv")
    subprocess.run([python, "-m", "venv", path], check=True, capture_output=True, timeout=300)
    return path


def pip_install_argv(venv_dir: str, wheel_path: str) -> list:
    """Offline and without pip's cache (which lives outside the workspace)."""
    return [os.path.join(venv_dir, "bin", "python"), "-m", "pip", "install", "-q",
            "--no-index", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
            wheel_path]


def reset_venv(venv_dir: str) -> None:
    """What `pip uninstall` does: the package and its dist-info leave site-packages."""
    lib = os.path.join(venv_dir, "lib")
    for version in os.listdir(lib):
        site = os.path.join(lib, version, "site-packages")
        for name in (PACKAGE, f"{PACKAGE}-{VERSION}.dist-info"):
            shutil.rmtree(os.path.join(site, name), ignore_errors=True)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
