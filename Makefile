# Entry points; each installs what it needs (run as root on a fresh machine, or as a user
# once the Debian packages are there).
.PHONY: demo test bench venv ffi clean

demo:
	bash tests/setup.sh venv
	.venv/bin/python tests/demo.py

test:
	bash tests/run.sh

bench:
	bash bench/run.sh

venv:
	bash tests/setup.sh venv

# Regenerate nsbox/_libc.py after changing nsbox/_ffi_build.py.
ffi:
	.venv/bin/python -m nsbox._ffi_build

clean:
	rm -rf .venv build *.egg-info
