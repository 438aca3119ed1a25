# Entry points; each installs what it needs (run as root on a fresh machine, or as a user
# once the Debian packages are there).
.PHONY: demo test bench bench-ray venv ffi clean

# Only what the demo needs, in .venv-demo (nsbox and its own dependencies).
demo:
	@bash tests/setup.sh demo .venv-demo
	@.venv-demo/bin/python tests/demo.py

test:
	bash tests/run.sh

bench:
	bash bench/run.sh

# Sandboxes at scale through Ray on a local two-node cluster (127.0.0.1); ARGS=--quick.
# As root it also installs what Ray's gVisor backend needs, to try that one too.
bench-ray:
	bash tests/setup.sh venv
	-[ "$$(id -u)" != 0 ] || command -v runsc >/dev/null || bash tests/setup.sh packages runsc erofs-utils
	.venv/bin/python bench/ray_bench.py $(ARGS)

venv:
	bash tests/setup.sh venv

# Regenerate nsbox/_libc.py after changing nsbox/_ffi_build.py.
ffi:
	.venv/bin/python -m nsbox._ffi_build

clean:
	rm -rf .venv .venv-demo build *.egg-info
