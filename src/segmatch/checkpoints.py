"""Checkpoints: each stage's result saved under a key, so a rerun after a crash resumes.

A key is made of the stage's name, the keys of what it reads (ultimately the input digest),
its config section and the package version: a stage is reused only when none of them changed.
Checkpoints live in ``<output>/.staging/checkpoints``, local or on object storage: a result's
frames and matrices are written first, each under a fresh name, and the small result file that
points at them last, in one write (a rename locally, one PUT on object storage). A crash never
leaves a checkpoint that a rerun would trust half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import socket
import time
import uuid
from typing import Any

from segmatch._version import __version__
from segmatch.engines.base import Engine
from segmatch.engines.types import StoredKind
from segmatch.layout import CHECKPOINTS_FOLDER, RUNS_FOLDER
from segmatch.locations import Files, join

MANIFESTS = "manifests"
#: Written in a live run's staging folder: who runs it, and the checkpoints it uses so far.
RUN_MARKER = "run.json"
RESULT_FILE = "result.pkl"


@dataclasses.dataclass(frozen=True)
class _Stored:
    """Placeholder for a field kept in its own folder (an engine frame or matrix)."""

    kind: StoredKind
    name: str


class Checkpoints:
    """Save and find stage results by key; keep only the last runs' checkpoints."""

    def __init__(
        self, staging: str, engine: Engine, *, files: Files, enabled: bool, keep_runs: int
    ) -> None:
        self.root = join(staging, CHECKPOINTS_FOLDER)
        self.manifests = join(staging, MANIFESTS)
        self.runs = join(staging, RUNS_FOLDER)
        self.engine = engine
        self.files = files
        self.enabled = enabled
        self.keep_runs = keep_runs
        self.used: list[str] = []
        self._run_id: str | None = None

    @staticmethod
    def key(stage: str, *parts: Any) -> str:
        """The checkpoint key of a stage given what determines its result."""
        blob = json.dumps([stage, __version__, *parts], sort_keys=True, default=str)
        return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"

    def begin(self, run_id: str) -> None:
        """Mark this run as live in its staging folder, so no other run's retention takes what
        it stages or the checkpoints it uses."""
        self._run_id = run_id
        self._write_marker()

    def load(self, key: str) -> Any | None:
        """The result saved under ``key``, or None."""
        folder = join(self.root, key)
        if not self.enabled or not self.files.exists(join(folder, RESULT_FILE)):
            return None
        result_type, fields = pickle.loads(self.files.read_bytes(join(folder, RESULT_FILE)))
        for name, value in fields.items():
            if isinstance(value, _Stored):
                place = join(folder, value.name)
                fields[name] = self.engine.load(folder=place, kind=value.kind)
        self._use(key)
        return result_type(**fields)

    def save(self, key: str, result: Any) -> None:
        """Save a stage result under ``key``: its frames and matrices, then the result file."""
        if not self.enabled:
            return
        folder = join(self.root, key)
        if self.files.exists(join(folder, RESULT_FILE)):
            self._use(key)
            return
        fields = {}
        for field in dataclasses.fields(result):
            value = getattr(result, field.name)
            kind = self.engine.stored_kind(value)
            if kind is None:
                fields[field.name] = value
                continue
            stored = _Stored(kind, f"{field.name}-{uuid.uuid4().hex[:12]}")
            self.engine.save(value, folder=join(folder, stored.name))
            fields[field.name] = stored
        blob = pickle.dumps((type(result), fields), protocol=pickle.HIGHEST_PROTOCOL)
        self.files.write_bytes(join(folder, RESULT_FILE), blob)
        self._use(key)

    def finish(self, run_id: str) -> None:
        """Record a successful run's checkpoints, then drop what no run needs any more.

        Kept: the checkpoints of the last ``keep_runs`` successful runs and of every live run,
        and live runs' staging. Removed: older checkpoints, and the staging of runs that ended
        without cleaning up (killed). A run is live while the process its marker names runs;
        a marker written on another host counts as live, since its process cannot be asked.
        """
        self.files.write_text(
            join(self.manifests, f"{run_id}.json"),
            json.dumps({"run_id": run_id, "finished": time.time(), "checkpoints": self.used}),
        )
        manifests = sorted(
            (
                json.loads(self.files.read_text(join(self.manifests, entry.relative)))
                for entry in self.files.list_files(self.manifests)
                if entry.relative.endswith(".json") and "/" not in entry.relative
            ),
            key=lambda manifest: manifest["finished"],
        )
        kept = manifests[-self.keep_runs :] if self.keep_runs else []
        for stale in manifests[: len(manifests) - len(kept)]:
            self.files.remove_file(join(self.manifests, f"{stale['run_id']}.json"))
        live = self._live_runs(besides=run_id)
        keep = {key for manifest in kept for key in manifest["checkpoints"]}
        keep |= {key for marker in live.values() for key in marker.get("checkpoints", [])}
        for name in self.files.subfolders(self.root):
            if name not in keep:
                self.files.remove_tree(join(self.root, name))
        for name in self.files.subfolders(self.runs):
            if name != run_id and name not in live:
                self.files.remove_tree(join(self.runs, name))

    def _use(self, key: str) -> None:
        self.used.append(key)
        self._write_marker()

    def _write_marker(self) -> None:
        if self._run_id is None:
            return
        marker = {
            "run_id": self._run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "checkpoints": self.used,
        }
        self.files.write_text(join(self.runs, self._run_id, RUN_MARKER), json.dumps(marker))

    def _live_runs(self, *, besides: str) -> dict[str, dict[str, Any]]:
        """The markers of runs whose process still runs, by run id."""
        live = {}
        for name in self.files.subfolders(self.runs):
            marker_path = join(self.runs, name, RUN_MARKER)
            try:
                marker = json.loads(self.files.read_text(marker_path))
            except (OSError, ValueError):
                continue
            if marker.get("run_id") != besides and _process_runs(marker):
                live[name] = marker
        return live


def _process_runs(marker: dict[str, Any]) -> bool:
    if marker.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(marker["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True
