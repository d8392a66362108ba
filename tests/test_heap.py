"""The garbage collector's passes in a process segmatch owns, and in one it does not."""

from __future__ import annotations

import subprocess
import sys


def freeze_counts(code: str) -> list[int]:
    """Run ``code`` in a fresh interpreter; the counts it printed as ``frozen N`` lines."""
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return [int(line.split()[1]) for line in completed.stdout.splitlines() if "frozen" in line]


def test_an_owned_process_freezes_what_it_loaded_and_what_it_loads_later():
    before, owned, settled = freeze_counts(
        "import gc; from segmatch import heap\n"
        "print('frozen', gc.get_freeze_count())\n"
        "heap.own_process(); print('frozen', gc.get_freeze_count())\n"
        "import scipy.optimize; heap.settle(); print('frozen', gc.get_freeze_count())\n"
    )
    assert before == 0
    assert owned > 0
    assert settled > owned


def test_a_process_segmatch_does_not_own_keeps_every_object_collectable():
    # A notebook or an application calling the API lives on after a run: frozen objects in a
    # reference cycle would never be freed there.
    (after,) = freeze_counts(
        "import gc; from segmatch import api, heap\n"
        "import scipy.optimize; heap.settle()\n"
        "print('frozen', gc.get_freeze_count())\n"
    )
    assert after == 0


def test_the_segmatch_command_owns_its_process():
    (count,) = freeze_counts(
        "import gc, sys; from segmatch import cli\n"
        "sys.argv = ['segmatch', '--version']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print('frozen', gc.get_freeze_count())\n"
    )
    assert count > 0
