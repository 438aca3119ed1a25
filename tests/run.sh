#!/usr/bin/env bash
# `make test`: the whole suite as root and again as an unprivileged user.
# As a non-root user it runs once, as that user.
set -uo pipefail
cd "$(dirname "$0")/.."
TEST_USER=${NSBOX_TEST_USER:-nsbox-test}

if [ "$(id -u)" != 0 ]; then
  bash tests/setup.sh venv || exit 1
  exec .venv/bin/python -m pytest -p no:cacheprovider "$@" tests
fi

set -e
bash tests/setup.sh packages
bash tests/setup.sh user
# A copy the unprivileged user can read: the checkout may sit under a private home.
STAGE=/var/tmp/nsbox-test-tree
rm -rf "$STAGE"
mkdir -p "$STAGE"
tar --exclude=./.venv --exclude=./.git --exclude='*/__pycache__' -cf - . | tar -xf - -C "$STAGE"
chmod -R a+rX "$STAGE"
(cd "$STAGE" && bash tests/setup.sh venv)
chmod -R a+rX "$STAGE"
set +e

echo "=== tests as root"
(cd "$STAGE" && .venv/bin/python -m pytest -p no:cacheprovider "$@" tests)
root_rc=$?
echo "=== root run: exit $root_rc"
echo "=== tests as unprivileged user $TEST_USER"
(cd "$STAGE" && runuser -u "$TEST_USER" -- env HOME="$(getent passwd "$TEST_USER" | cut -d: -f6)" \
   .venv/bin/python -m pytest -p no:cacheprovider "$@" tests)
user_rc=$?
[ $root_rc = 0 ] && [ $user_rc = 0 ]
