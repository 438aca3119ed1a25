"""`nsbox exec` starts with the cyclic GC off and turns it back on before any fork
(cli.main, cli.execute.collect_from_here). Each case runs in its own interpreter:
the GC's state is process-wide."""

import subprocess
import sys


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_start_up_objects_are_frozen_and_collection_resumes():
    out = _run("import gc\n"
               "from nsbox.cli import execute\n"
               "gc.disable()\n"
               "execute.collect_from_here()\n"
               "print(gc.isenabled(), gc.get_freeze_count() > 0)")
    assert out == "True True"


def test_a_caller_with_the_gc_on_is_left_as_it_was():
    # main(argv) called in-process (tests, embedding): nothing is frozen.
    out = _run("import gc\n"
               "from nsbox.cli import execute\n"
               "execute.collect_from_here()\n"
               "print(gc.isenabled(), gc.get_freeze_count())")
    assert out == "True 0"


def test_main_with_argv_keeps_the_callers_gc():
    out = _run("import gc, io, contextlib\n"
               "from nsbox.cli import main\n"
               "with contextlib.redirect_stdout(io.StringIO()):\n"
               "    main(['exec', '--help'])\n"
               "print(gc.isenabled(), gc.get_freeze_count())")
    assert out == "True 0"
