"""The garbage collector in a process segmatch owns (the ``segmatch`` command).

Python's collector scans every tracked object in its oldest generation on each full pass, and
a run's libraries (MLflow with SQLAlchemy and pandas, SciPy, PySpark) load hundreds of
thousands of them that live until the process ends. Measured on 2 cores, a tracked run of a
2,240-row table spent 0.6 s in full passes during the run and 0.7 s in the passes of the
interpreter's exit; a run over 1,000,000 rows the same. Where the process ends with the command,
what the libraries loaded is moved out of the collector's sight (``gc.freeze``) once loaded,
and so is everything at exit.

In any other process (a notebook, an application calling the API), nothing here acts: frozen
objects caught in a reference cycle would never be freed, and such a process lives on.
"""

from __future__ import annotations

import atexit
import gc

_owned = False


def own_process() -> None:
    """Declare that this process ends when its command does (the CLI's entry point calls it):
    what is loaded so far, and everything at exit, is left out of the collector's passes."""
    global _owned  # noqa: PLW0603 -- one process-wide decision, taken once by the entry point
    if not _owned:
        _owned = True
        atexit.register(gc.freeze)
    gc.freeze()


def settle() -> None:
    """Leave what exists now out of later collector passes, in a process segmatch owns; call it
    after loading a heavy library. Does nothing elsewhere."""
    if _owned:
        gc.freeze()
