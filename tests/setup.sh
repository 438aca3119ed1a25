#!/usr/bin/env bash
# Installs what nsbox's demo, tests and benchmark need, from nothing.
#   setup.sh packages   Debian packages (as root; skipped when present)
#   setup.sh venv [DIR] a virtualenv in DIR (default .venv) with nsbox and test deps
#   setup.sh user       the unprivileged test user (as root)
#   setup.sh demo [DIR] what `make demo` needs: a virtualenv in DIR (default .venv-demo)
#                       with nsbox and its own dependencies only
set -euo pipefail
cd "$(dirname "$0")/.."

TEST_USER=${NSBOX_TEST_USER:-nsbox-test}
# The system interpreter, so that an unprivileged user can run the venv too
# (an interpreter under /root is out of its reach).
PYTHON=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}

packages() {
  local need=()
  "$PYTHON" -m venv --help >/dev/null 2>&1 && "$PYTHON" -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
  command -v git >/dev/null || need+=(git)
  command -v setpriv >/dev/null || need+=(util-linux)
  command -v runuser >/dev/null || need+=(util-linux)
  command -v make >/dev/null || need+=(make)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  # seccomp tests install a wheel with the system pip inside a sandbox.
  "$PYTHON" -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  # network allowlist tests: curl through the proxy, a self-signed certificate.
  command -v curl >/dev/null || need+=(curl)
  command -v openssl >/dev/null || need+=(openssl)
  # Ray backend tests block user namespaces with bubblewrap.
  command -v bwrap >/dev/null || need+=(bubblewrap)
  # memory caps: node and java must start under one.
  command -v node >/dev/null || need+=(nodejs)
  # package cache tests: npm install in a sandbox (Debian ships npm apart from nodejs).
  command -v npm >/dev/null || need+=(npm)
  command -v java >/dev/null || need+=(default-jre-headless)
  # terminal tests drive an interactive shell in the sandbox.
  command -v tmux >/dev/null || need+=(tmux)
  # container mode: a root made from the busybox-static package.
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  [ -e /usr/lib/x86_64-linux-gnu/libseccomp.so.2 ] || ls /usr/lib/*/libseccomp.so.2 >/dev/null 2>&1 || need+=(libseccomp2)
  for extra in "$@"; do need+=("$extra"); done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "setup: missing Debian packages: ${need[*]} (run as root to install them)" >&2
      return 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

venv() {
  local dir=${1:-.venv}
  if [ "$(id -u)" = 0 ]; then packages; fi
  if [ ! -x "$dir/bin/python" ]; then
    "$PYTHON" -m venv "$dir"
  fi
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  "$dir/bin/python" -m pip install -q --disable-pip-version-check \
    -e ".[test,inspect,mini-swe-agent,ray,openai-agents]" --config-settings editable_mode=compat >"$dir/pip-install.log" 2>&1 || { cat "$dir/pip-install.log" >&2; return 1; }
  # package cache tests: uv and pipx in a sandbox (skipped without them).
  "$dir/bin/python" -m pip install -q --disable-pip-version-check uv pipx >>"$dir/pip-install.log" 2>&1 \
    || echo "setup: could not install uv and pipx; their cache tests will be skipped" >&2
  "$dir/bin/python" -c 'import nsbox, cffi, pytest' >/dev/null
}

demo() {
  local dir=${1:-.venv-demo} need=()
  echo "[1/3] Debian packages: python3-venv, procps"
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
  command -v ps >/dev/null || need+=(procps)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "setup: missing Debian packages: ${need[*]} (run as root to install them)" >&2; return 1; }
    echo "      installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  echo "[2/3] virtualenv $dir"
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  echo "[3/3] nsbox and its dependencies (cffi, typer, pyseccomp) into $dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check \
    -e . --config-settings editable_mode=compat >"$dir/pip-install.log" 2>&1 || { cat "$dir/pip-install.log" >&2; return 1; }
}

user() {
  id "$TEST_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$TEST_USER"
}

"$@"
