"""Checkpoints: each stage's result saved under a key, so a rerun after a crash resumes.

A key is made of the stage's name, the keys of what it reads (ultimately the input digest),
its config section and the package version: a stage is reused only when none of them changed.
Checkpoints live in ``<output>/.staging/checkpoints``; each is written to a temporary folder
and renamed, so a crash never leaves a half-written checkpoint that a rerun would trust.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from segmatch._version import __version__
from segmatch.engines.base import Engine
from segmatch.storage import RUNS_FOLDER

CHECKPOINTS = "checkpoints"
MANIFESTS = "manifests"
#: Written in a live run's staging folder: who runs it, and the checkpoints it uses so far.
RUN_MARKER = "run.json"
RESULT_FILE = "result.pkl"


@dataclasses.dataclass(frozen=True)
class _Stored:
    """Placeholder for a field kept in its own file (an engine frame or matrix)."""

    kind: str


class Checkpoints:
    """Save and find stage results by key; keep only the last runs' checkpoints."""

    def __init__(
        self, staging: Path | None, engine: Engine, *, enabled: bool, keep_runs: int
    ) -> None:
        """``staging`` None: the output has no local staging folder; nothing is kept."""
        self.active = staging is not None
        staging = staging or Path()
        self.root = staging / CHECKPOINTS
        self.manifests = staging / MANIFESTS
        self.runs = staging / RUNS_FOLDER
        self.engine = engine
        self.enabled = enabled and self.active
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
        if self.active:
            self._run_id = run_id
            self._write_marker()

    def load(self, key: str) -> Any | None:
        """The result saved under ``key``, or None."""
        folder = self.root / key
        if not self.enabled or not (folder / RESULT_FILE).exists():
            return None
        with (folder / RESULT_FILE).open("rb") as handle:
            result_type, fields = pickle.load(handle)
        for name, value in fields.items():
            if isinstance(value, _Stored):
                fields[name] = (
                    self.engine.load_frame(path=folder / name)
                    if value.kind == "frame"
                    else self.engine.load_matrix(folder=folder / name)
                )
        self._use(key)
        return result_type(**fields)

    def save(self, key: str, result: Any) -> None:
        """Save a stage result under ``key`` (atomically: temporary folder, then rename)."""
        if not self.enabled:
            return
        folder = self.root / key
        temporary = self.root / f".{key}.{uuid.uuid4().hex}"
        temporary.mkdir(parents=True)
        fields = {}
        for field in dataclasses.fields(result):
            value = getattr(result, field.name)
            kind = self.engine.stored_kind(value)
            if kind == "frame":
                self.engine.save_frame(value, path=temporary / field.name)
            elif kind == "matrix":
                self.engine.save_matrix(value, folder=temporary / field.name)
            fields[field.name] = _Stored(kind) if kind else value
        with (temporary / RESULT_FILE).open("wb") as handle:
            pickle.dump((type(result), fields), handle, protocol=pickle.HIGHEST_PROTOCOL)
        if folder.exists():
            shutil.rmtree(temporary)
        else:
            os.replace(temporary, folder)
        self._use(key)

    def finish(self, run_id: str) -> None:
        """Record a successful run's checkpoints, then drop what no run needs any more.

        Kept: the checkpoints of the last ``keep_runs`` successful runs and of every live run,
        and live runs' staging. Removed: older checkpoints, and the staging of runs that ended
        without cleaning up (killed). A run is live while the process its marker names runs;
        a marker written on another host counts as live, since its process cannot be asked.
        """
        if not self.active:
            return
        self.manifests.mkdir(parents=True, exist_ok=True)
        (self.manifests / f"{run_id}.json").write_text(
            json.dumps({"run_id": run_id, "finished": time.time(), "checkpoints": self.used})
        )
        manifests = sorted(
            self.manifests.glob("*.json"), key=lambda p: json.loads(p.read_text())["finished"]
        )
        kept = manifests[-self.keep_runs :] if self.keep_runs else []
        for stale in manifests[: len(manifests) - len(kept)]:
            stale.unlink()
        live = self._live_runs(besides=run_id)
        keep = {key for m in kept for key in json.loads(m.read_text())["checkpoints"]}
        keep |= {key for marker in live.values() for key in marker.get("checkpoints", [])}
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if folder.name not in keep:
                    shutil.rmtree(folder, ignore_errors=True)
        if self.runs.is_dir():
            for folder in self.runs.iterdir():
                if folder.name != run_id and folder.name not in live:
                    shutil.rmtree(folder, ignore_errors=True)

    def _use(self, key: str) -> None:
        self.used.append(key)
        self._write_marker()

    def _write_marker(self) -> None:
        run_id = self._run_id
        if run_id is None:
            return
        folder = self.runs / run_id
        folder.mkdir(parents=True, exist_ok=True)
        marker = {
            "run_id": run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "checkpoints": self.used,
        }
        temporary = folder / f".{RUN_MARKER}.{uuid.uuid4().hex}"
        temporary.write_text(json.dumps(marker))
        os.replace(temporary, folder / RUN_MARKER)

    def _live_runs(self, *, besides: str) -> dict[str, dict[str, Any]]:
        """The markers of runs whose process still runs, by run id."""
        live = {}
        for marker_path in self.runs.glob(f"*/{RUN_MARKER}") if self.runs.is_dir() else []:
            try:
                marker = json.loads(marker_path.read_text())
            except (OSError, ValueError):
                continue
            if marker.get("run_id") != besides and _process_runs(marker):
                live[marker_path.parent.name] = marker
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
