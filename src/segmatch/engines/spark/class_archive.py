"""The classes a local session's JVM loads, archived once per machine (the JVM's class-data
sharing): later starts map them from one file instead of reading, verifying and linking each
from Spark's jars. Measured here: a local session's start and first query 7.2-7.5 s → 4.4 s.

The first start on a machine for more than a small input runs with the JVM's archiving at exit
on; at this process's exit its JVM is then asked to stop and waited for while it writes the
archive (10-16 s, once, and the start itself is slower: a first run of 20,000 customers took
48 s instead of 22, the next 18).
The archive is kept only when that JVM exited cleanly: the JVM removes a file it failed to
write and exits with an error, and mapping a truncated archive would crash every later start.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from segmatch.progress import progress

#: The archive's own notices (classes it skips, a JVM build it does not match) are not about
#: the run: the JVM then starts without the archive, as it would have anyway.
QUIET = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off")
#: How long this process's exit waits for its JVM to write the archive.
WRITE_SECONDS = 300

logger = logging.getLogger(__name__)


class ClassArchive:
    """Where the archive for this machine's Java and Spark lives, and the JVM options that
    use it (or, when none is there yet, write it)."""

    def __init__(self, folder: Path, identity: str) -> None:
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.path = folder / f"spark-classes-{digest}.jsa"
        self._partial = self.path.with_name(f"{self.path.stem}.{os.getpid()}.partial")
        self.writes = False

    @classmethod
    def for_this_machine(cls, folder: Path) -> ClassArchive | None:
        """The archive for the Java a local session starts (``JAVA_HOME``'s, else the one on
        the path) and the jars of the Spark it runs (``SPARK_HOME``'s, else PySpark's own); None
        without a Java to start."""
        java = _java()
        if java is None:
            return None
        import pyspark  # noqa: PLC0415 -- only its location and version are needed

        home = os.environ.get("SPARK_HOME")
        jars = (Path(home) if home else Path(pyspark.__file__).parent) / "jars"
        names = sorted(p.name for p in jars.glob("*.jar")) if jars.is_dir() else []
        found = java.stat()
        # The class path as the JVM is given it: a linked copy of a Spark home is another one.
        facts = [str(java), str(found.st_size), str(found.st_mtime_ns), pyspark.__version__]
        identity = "|".join([*facts, str(jars), *names])
        return cls(folder, identity)

    def java_options(self, *, may_write: bool = True) -> list[str]:
        """The options that map the archive, or that write it at the JVM's exit when there is
        none and ``may_write``; none while another process is writing it (its JVM is still
        running)."""
        if self.path.is_file():
            return [f"-XX:SharedArchiveFile={self.path}", *QUIET]
        if not may_write or self._being_written():
            return []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            logger.info("no class archive in %s: %s", self.path.parent, error)
            return []
        self.writes = True
        return [f"-XX:ArchiveClassesAtExit={self._partial}", *QUIET]

    def keep_at_exit(self, session: Any) -> None:
        """When ``session``'s JVM writes the archive: at this process's exit, stop that JVM,
        wait for it, and keep the archive only if it exited cleanly."""
        if not self.writes:
            return
        process = getattr(getattr(session.sparkContext, "_gateway", None), "proc", None)
        if process is not None:
            atexit.register(self._finish, process)

    def _finish(self, process: subprocess.Popen[bytes]) -> None:
        # The JVM stops when its input closes, as it does when this process ends.
        if process.stdin is not None:
            process.stdin.close()
        # Seconds after the run's summary: the terminal says what they are.
        with progress("writing the Spark JVM's class archive (once per machine)"):
            try:
                status = process.wait(timeout=WRITE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                status = None
        if status == 0 and self._partial.is_file():
            self._partial.replace(self.path)
        else:
            logger.info("the JVM did not write a class archive (exit status %s)", status)
            self._partial.unlink(missing_ok=True)

    def _being_written(self) -> bool:
        """Whether a live process's JVM is writing the archive; leftovers of processes that
        ended before theirs finished are removed."""
        writing = False
        for partial in self.path.parent.glob(f"{self.path.stem}.*.partial"):
            pid = partial.suffixes[-2].lstrip(".") if len(partial.suffixes) >= 2 else ""
            if pid.isdigit() and _alive(int(pid)):
                writing = True
            else:
                partial.unlink(missing_ok=True)
        return writing


def _java() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
