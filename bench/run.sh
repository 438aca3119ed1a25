#!/usr/bin/env bash
# `make bench`: start-up latency of nsbox against its peers, as an unprivileged user.
# As root: installs the peers (bubblewrap, util-linux), stages a copy of the tree the
# test user can read, and runs the benchmark there as that user; results are copied
# back to bench/results/. As a user: runs in place.
# Arguments go to bench/bench.py, e.g. `bash bench/run.sh --quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_USER=${NSBOX_TEST_USER:-nsbox-test}
STAGE=/var/tmp/nsbox-bench-tree

bench_venv() {
  bash tests/setup.sh venv
  # The plot is optional: without matplotlib the benchmark says so and goes on.
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[bench]" \
    --config-settings editable_mode=compat >.venv/pip-bench.log 2>&1 ||
    echo "bench: could not install matplotlib (see .venv/pip-bench.log); no plot" >&2
}

if [ "$(id -u)" != 0 ]; then
  bench_venv
  exec .venv/bin/python bench/bench.py "$@"
fi

peers=()
command -v bwrap >/dev/null || peers+=(bubblewrap)
command -v unshare >/dev/null || peers+=(util-linux)
bash tests/setup.sh packages "${peers[@]}" ||
  echo "bench: could not install ${peers[*]}; their cases will be skipped" >&2
bash tests/setup.sh user

# Keep the staged venv between runs; refresh everything else.
mkdir -p "$STAGE"
find "$STAGE" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
tar --exclude=./.venv --exclude=./.git --exclude='*/__pycache__' --exclude=./bench/results \
  -cf - . | tar -xf - -C "$STAGE"
(cd "$STAGE" && bench_venv)
# The user cannot write __pycache__ here: compile now, or every launch compiles nsbox.
"$STAGE/.venv/bin/python" -m compileall -q "$STAGE/nsbox" "$STAGE/bench" >/dev/null
chmod -R a+rX "$STAGE"

OUT=$(mktemp -d /var/tmp/nsbox-bench-results.XXXXXX)
chown "$BENCH_USER" "$OUT"
set +e
(cd "$STAGE" && runuser -u "$BENCH_USER" -- env HOME="$(getent passwd "$BENCH_USER" | cut -d: -f6)" \
   .venv/bin/python bench/bench.py --results "$OUT" "$@")
rc=$?
mkdir -p bench/results
cp -r "$OUT"/. bench/results/
rm -rf "$OUT"
exit $rc
