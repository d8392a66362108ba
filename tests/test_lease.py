"""Every way a lease can fail: busy, taken as stale while its holder commits, changed by
another writer between a read and a release — each one stops the run that lost it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from segmatch.errors import OutputBusyError
from segmatch.lease import Claim, LeaseState, OutputLease, TableState


def test_a_live_holder_keeps_the_lease_until_the_wait_is_used_up(tmp_path):
    first = OutputLease(str(tmp_path))
    claim = first.acquire("first", timeout=0)
    with pytest.raises(OutputBusyError, match="another run first is writing to"):
        OutputLease(str(tmp_path)).acquire("second", timeout=0.2)
    first.release(claim, current_run="first", tables={"segments": TableState(0, "first", None)})
    state = OutputLease(str(tmp_path)).current()
    assert state.holder is None and state.current_run == "first"
    assert state.tables["segments"].version == 0


def test_a_run_whose_lease_was_taken_as_stale_while_committing_cannot_release_it(tmp_path):
    # The slow run's process takes the lease and is gone (as a run whose host stopped
    # answering for hours looks): the next run takes the lease as stale.
    taken = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from segmatch.lease import OutputLease; "
            "print(OutputLease(sys.argv[1]).acquire('slow', timeout=0).version)",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    slow = Claim("slow", LeaseState(), int(taken.stdout))
    impatient = OutputLease(str(tmp_path)).acquire("impatient", timeout=0)
    assert impatient.interrupted == "slow"
    with pytest.raises(OutputBusyError, match=r"run slow lost its lease .* to impatient"):
        OutputLease(str(tmp_path)).release(
            slow, current_run="slow", tables={"segments": TableState(3, "slow", None)}
        )
    state = OutputLease(str(tmp_path)).current()
    assert state.holder == "impatient" and state.current_run is None and not state.tables


class _ChangedAfterReading(OutputLease):
    """A lease whose table another writer commits to right after each read."""

    def _read(self):
        table, state = super()._read()
        other = OutputLease(self.root)
        other_table, other_state = OutputLease._read(other)
        other._write(other_table, other_state)
        return table, state


def test_a_release_that_another_writer_raced_fails_and_keeps_nothing_half_written(tmp_path):
    claim = OutputLease(str(tmp_path)).acquire("racer", timeout=0)
    with pytest.raises(OutputBusyError, match="could not release its lease"):
        _ChangedAfterReading(str(tmp_path)).release(claim, current_run="racer", tables={})
    state = OutputLease(str(tmp_path)).current()
    assert state.holder == "racer" and state.current_run is None
