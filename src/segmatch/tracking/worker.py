"""Where a run's MLflow calls execute: a Python process of their own beside the run, or, where
that process could not sign in (Databricks), one thread.

MLflow's import, its SQLAlchemy store and logging a model are seconds of Python. On a thread
they share the run's interpreter lock: measured on 2 cores, the stages of a 2,240-row table ran
a second slower beside them, and a 1,000,000-row run 0.5–0.9 s. A process of their own runs on
the other core; it starts with the run (``python -m segmatch.tracking.worker``: no main module of
the caller's is imported again, guarded or not) and serves every tracked run of the process that
started it, one call at a time, in the order submitted. Whatever MLflow logs or warns there is
handed back and logged or warned here, so it lands where this process sends its own.

A Databricks workspace signs MLflow in from the notebook's own context, which another process
does not have: there, and wherever ``tracking.uri`` is ``databricks``, the calls run on a thread.
"""

from __future__ import annotations

import atexit
import builtins
import itertools
import json
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, Protocol

from segmatch.errors import TrackingError

#: Each message is its pickled length, then the pickled message.
_FRAME = struct.Struct("!Q")
#: Seconds a closing tracking process is given before it is stopped.
CLOSE_SECONDS = 10.0


class Worker(Protocol):
    """Runs submitted calls one at a time, in order."""

    def submit(self, function: Callable[..., Any], /, *args: Any) -> Future[Any]: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Done with it for this run."""


def worker_for(uri: str, *, quiet_mlflow: bool) -> Worker:
    """The process beside this one (started on first use), or a thread for a Databricks
    workspace's tracking. ``quiet_mlflow``: MLflow's own notices stay off standard error
    (the CLI keeps the terminal for segmatch's lines)."""
    if uri.startswith("databricks"):
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmatch-mlflow")
    with _SHARED_LOCK:
        key = (quiet_mlflow, logging.getLogger().getEffectiveLevel())
        current = _SHARED.get(key)
        if current is None or not current.alive():
            current = _SHARED[key] = TrackingProcess(quiet_mlflow=quiet_mlflow, level=key[1])
        return current


_SHARED: dict[tuple[bool, int], TrackingProcess] = {}
_SHARED_LOCK = threading.Lock()


class TrackingProcess:
    """A Python process that runs the calls submitted to it, one at a time, in order."""

    def __init__(self, *, quiet_mlflow: bool, level: int) -> None:
        settings = json.dumps({"quiet_mlflow": quiet_mlflow, "level": level})
        self._process = subprocess.Popen(
            [sys.executable, "-m", "segmatch.tracking.worker", settings],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._pending: dict[int, Future[Any]] = {}
        self._ended: str | None = None
        self._lock = threading.Lock()
        self._tasks = itertools.count()
        threading.Thread(
            target=self._read_replies, name="segmatch-tracking-process", daemon=True
        ).start()
        atexit.register(self.close)

    def alive(self) -> bool:
        return self._ended is None and self._process.poll() is None

    def submit(self, function: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._ended is not None:
                future.set_exception(TrackingError(self._ended))
                return future
            task = next(self._tasks)
            self._pending[task] = future
            try:
                _send(_stream(self._process.stdin), (task, function, args))
            except OSError as error:
                del self._pending[task]
                reason = f"the tracking process cannot be reached: {error}"
                future.set_exception(TrackingError(reason))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to do: the process serves the runs that follow, and closes at exit."""

    def close(self) -> None:
        """Let the process finish what it was given and end."""
        with self._lock:
            if self._process.stdin is not None and not self._process.stdin.closed:
                self._process.stdin.close()
        try:
            self._process.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _read_replies(self) -> None:
        replies = _stream(self._process.stdout)
        while True:
            try:
                task, succeeded, payload, records, warned = _receive(replies)
            except (EOFError, OSError):
                break
            future = self._pending.pop(task)
            value: Any
            try:
                # A warning this process's filters turn into an error fails the call, as it
                # would have where the call ran.
                _relay(records, warned)
            except Warning as error:
                value, succeeded = error, False
            else:
                try:
                    value = pickle.loads(payload)
                except Exception as error:  # a class this process cannot import, say
                    value, succeeded = TrackingError(f"unreadable reply: {error}"), False
            if succeeded:
                future.set_result(value)
            else:
                future.set_exception(value)
        code = self._process.wait()
        with self._lock:
            self._ended = f"the tracking process ended (exit code {code})"
            for future in self._pending.values():
                future.set_exception(TrackingError(self._ended))
            self._pending.clear()


def _stream(stream: IO[bytes] | None) -> IO[bytes]:
    assert stream is not None, "the tracking process was started with pipes"
    return stream


def _send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_FRAME.size)
    if len(header) < _FRAME.size:
        raise EOFError
    (size,) = _FRAME.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _relay(records: list[dict[str, Any]], warned: list[tuple[str, str, str, int]]) -> None:
    """What the tracking process logged and warned, logged and warned here."""
    for fields in records:
        record = logging.makeLogRecord(fields)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    for message, category, filename, line in warned:
        kind = getattr(builtins, category, UserWarning)
        if not (isinstance(kind, type) and issubclass(kind, Warning)):
            kind = UserWarning
        warnings.warn_explicit(message, kind, filename, line)


# -- the tracking process -----------------------------------------------------------------


#: What a log record carries back: its text, never the objects its message was made of.
_RECORD_FIELDS = (
    "name", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
    "created", "msecs", "relativeCreated", "thread", "threadName", "process", "processName",
)  # fmt: skip


class _Collected(logging.Handler):
    """Keeps the records logged during one call, as plain fields ready to be pickled."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {name: getattr(record, name, None) for name in _RECORD_FIELDS}
        fields["msg"] = record.getMessage()
        if record.exc_info:
            fields["exc_text"] = "".join(traceback.format_exception(*record.exc_info))
        self.records.append(fields)

    def take(self) -> list[dict[str, Any]]:
        taken, self.records = self.records, []
        return taken


def _builtin_category(category: type[Warning]) -> str:
    """The nearest built-in warning class: the caller need not import the library's own."""
    return next(c.__name__ for c in category.__mro__ if c.__module__ == "builtins")


def _picklable(error: BaseException) -> BaseException:
    """The error itself when it survives the trip back, else a TrackingError naming it; either
    way with this process's traceback as a note."""
    error.add_note("in the tracking process:\n" + "".join(traceback.format_exception(error)))
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        replacement = TrackingError(f"{type(error).__name__}: {error}")
        replacement.add_note(error.__notes__[-1])
        return replacement
    return error


def serve(requests: IO[bytes], replies: IO[bytes], *, quiet_mlflow: bool, level: int) -> None:
    """Run each call received, in order, until the requests end."""
    from segmatch import heap  # noqa: PLC0415
    from segmatch.tracking.store import import_mlflow  # noqa: PLC0415

    heap.own_process()
    collected = _Collected()
    root = logging.getLogger()
    root.handlers[:] = [collected]
    root.setLevel(level)
    import_mlflow()
    from mlflow.utils.logging_utils import disable_logging  # noqa: PLC0415

    while True:
        try:
            task, function, args = _receive(requests)
        except EOFError:
            return
        if quiet_mlflow:
            # Before every call: some of MLflow's own calls switch its notices back on.
            disable_logging()
        with warnings.catch_warnings(record=True) as caught:
            # Every warning goes back: the filters of the process that started this one decide.
            warnings.simplefilter("always")
            try:
                payload, succeeded = pickle.dumps(function(*args)), True
            except Exception as error:
                payload, succeeded = pickle.dumps(_picklable(error)), False
        warned = [
            (str(w.message), _builtin_category(w.category), w.filename, w.lineno) for w in caught
        ]
        _send(replies, (task, succeeded, payload, collected.take(), warned))


def main() -> None:
    settings = json.loads(sys.argv[1])
    # Replies go through the pipe that was standard output; anything printed goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Ctrl-C reaches the whole terminal's process group: the run decides how its tracking ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 0
    try:
        serve(sys.stdin.buffer, replies, **settings)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        logging.shutdown()
        sys.stderr.flush()
        # Nothing is left to free: the interpreter's own exit would spend 0.7 s collecting
        # what MLflow loaded.
        os._exit(code)


if __name__ == "__main__":
    main()
