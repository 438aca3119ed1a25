import pathlib

from nsbox import _ffi_build


def test_generated_libc_module_matches_its_declarations():
    committed = pathlib.Path(_ffi_build.__file__).with_name("_libc.py").read_text()
    assert committed == _ffi_build.generated_source(), \
        "nsbox/_libc.py is stale: run `make ffi` (python -m nsbox._ffi_build)"
