#!/usr/bin/env bash
# `make bench`: start-up latency of nsbox against its peers, as an unprivileged user,
# measured on a REGULAR install: a venv made by /usr/bin/python3 -m venv with the
# platform's own pip (not upgraded), `pip install <tree>` (not editable), byte-compiled.
# The benchmark runs the venv's bin/nsbox as the install made it and imports nsbox from
# that venv's site-packages (bench.py --installed checks it).
# As root: installs the peers (bubblewrap, util-linux), stages a copy of the tree the
# test user can read, installs it, measures idle Session memory from the root side
# (bench/session_memory.py) and that of many sandboxes on one image (bench/image_memory.py)
# and runs the benchmark as that user; results are copied back to bench/results/.
# As a user: installs into /var/tmp and runs from this tree.
# Arguments go to bench/bench.py, e.g. `bash bench/run.sh --quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_USER=${NSBOX_TEST_USER:-nsbox-test}
PYTHON=/usr/bin/python3
STAGE=/var/tmp/nsbox-bench-tree

# install_venv VENV SRC: a fresh venv with the platform's pip and a regular install of SRC.
install_venv() {
  local venv=$1 src=$2 build
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  # pip builds in the source tree (build/, *.egg-info): build from a throwaway copy.
  build=$(mktemp -d /var/tmp/nsbox-bench-build.XXXXXX)
  tar -C "$src" --exclude=./.venv --exclude=./.git --exclude='*/__pycache__' \
    --exclude=./bench/results --exclude=./build -cf - . | tar -xf - -C "$build"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$build" \
    >"$venv/pip-install.log" 2>&1 || { cat "$venv/pip-install.log" >&2; rm -rf "$build"; return 1; }
  rm -rf "$build"
  "$venv/bin/python" -m pip --version | cut -d' ' -f1-2 >"$venv/pip-version"
  # PYTHONDONTWRITEBYTECODE may be set: compile explicitly, or every launch compiles.
  "$venv/bin/python" -m compileall -q "$venv"/lib/python3*/site-packages >/dev/null || true
  chmod -R a+rX "$venv"
}

# A separate venv for the optional plot, kept between runs; no plot if it can't be made.
plot_venv() {
  local venv=$1
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    rm -rf "$venv"
    { "$PYTHON" -m venv "$venv" &&
      "$venv/bin/python" -m pip install -q --disable-pip-version-check matplotlib \
        >"$venv/pip-plot.log" 2>&1; } ||
      { echo "bench: could not install matplotlib (see $venv/pip-plot.log); no plot" >&2; return 0; }
    "$venv/bin/python" -m compileall -q "$venv"/lib/python3*/site-packages >/dev/null || true
  fi
  chmod -R a+rX "$venv"
}

if [ "$(id -u)" != 0 ]; then
  VENV=/var/tmp/nsbox-bench-venv-$(id -u)
  PLOT=/var/tmp/nsbox-bench-plot-$(id -u)
  install_venv "$VENV" .
  plot_venv "$PLOT"
  # bench.py runs from /tmp (not this tree) so that `import nsbox` finds the install.
  exec env -u PYTHONPATH -C /tmp "$VENV/bin/python" "$PWD/bench/bench.py" --installed "$VENV" \
    --pip-version "$(cat "$VENV/pip-version")" --plot-python "$PLOT/bin/python" "$@"
fi

peers=()
command -v bwrap >/dev/null || peers+=(bubblewrap)
command -v unshare >/dev/null || peers+=(util-linux)
bash tests/setup.sh packages "${peers[@]}" ||
  echo "bench: could not install ${peers[*]}; their cases will be skipped" >&2
bash tests/setup.sh user

# Refresh the staged tree (the benchmark's own scripts) and its regular install.
VENV=$STAGE/.venv
PLOT=/var/tmp/nsbox-bench-plot
mkdir -p "$STAGE"
find "$STAGE" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
tar --exclude=./.venv --exclude=./.git --exclude='*/__pycache__' --exclude=./bench/results \
  --exclude=./build -cf - . | tar -xf - -C "$STAGE"
install_venv "$VENV" "$STAGE"
plot_venv "$PLOT"
"$VENV/bin/python" -m compileall -q "$STAGE/bench" >/dev/null
chmod -R a+rX "$STAGE"

OUT=$(mktemp -d /var/tmp/nsbox-bench-results.XXXXXX)
chown "$BENCH_USER" "$OUT"
chmod 755 "$OUT"
USER_HOME=$(getent passwd "$BENCH_USER" | cut -d: -f6)
as_user=(runuser -u "$BENCH_USER" -- env -u PYTHONPATH -C /tmp HOME="$USER_HOME")
set +e
# Idle Session memory: the user's sessions, their PSS read here as root (nsbox's helper
# processes are not dumpable, so the user cannot read their smaps_rollup).
quick=0 only="" prev=""
for arg in "$@"; do
  [ "$arg" = --quick ] && quick=1
  case $arg in --only) only="?" ;; --only=*) only=${arg#--only=} ;; esac  # one section
  [ "$prev" = --only ] && only=$arg
  prev=$arg
done
[ -n "$only" ] ||
"$VENV/bin/python" "$STAGE/bench/session_memory.py" measure --sessions $((quick ? 4 : 8)) \
  --out "$OUT/memory.json" -- "${as_user[@]}" "$VENV/bin/python" "$STAGE/bench/session_memory.py" hold ||
  echo "bench: the root-side memory measurement failed; bench.py will try its own" >&2
# Idle sandboxes on one image (and on the host root, the reference), measured alike.
if [ -z "$only" ] || [ "$only" = image-memory ]; then
  "$VENV/bin/python" "$STAGE/bench/image_memory.py" measure --sandboxes $((quick ? 4 : 16)) \
    --out "$OUT/image_memory.json" \
    -- "${as_user[@]}" "$VENV/bin/python" "$STAGE/bench/image_memory.py" hold ||
    echo "bench: the root-side image memory measurement failed; bench.py will try its own" >&2
fi
"${as_user[@]}" "$VENV/bin/python" "$STAGE/bench/bench.py" --results "$OUT" \
  --installed "$VENV" --pip-version "$(cat "$VENV/pip-version")" \
  --plot-python "$PLOT/bin/python" --memory-json "$OUT/memory.json" \
  --image-memory-json "$OUT/image_memory.json" "$@"
rc=$?
mkdir -p bench/results
cp -r "$OUT"/. bench/results/
rm -f bench/results/memory.json bench/results/image_memory.json
rm -rf "$OUT"
exit $rc
