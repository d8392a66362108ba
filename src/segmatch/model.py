"""SegmentModel: everything a fitted segmentation learned, as plain arrays.

It holds no engine object, so a model fitted by one engine is applied by any other, and it
serialises to JSON-compatible data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from segmatch import kernels
from segmatch.encoding import MISSING_LEVEL, feature_names, one_hot_columns
from segmatch.errors import ModelError


class Fitted(NamedTuple):
    """The learned arrays of a fitted model, none of them missing."""

    center: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    pca_mean: np.ndarray
    centroids: np.ndarray
    segment_ids: np.ndarray


@dataclass
class SegmentModel:
    """Imputation, encoding, scaling, PCA and centroids of one fitted segmentation.

    Attributes ending in ``_`` are learned; :meth:`predict` and :meth:`transform` take the
    feature matrix built by the features stage (numeric columns, then one-hot levels).

    Example:
        >>> model = SegmentModel.load(Path("segmatch-out/model.json"))  # doctest: +SKIP
        >>> rows = model.features_from_columns({"age": [31], "income": [52_000]})  # doctest: +SKIP
        >>> model.predict(rows)  # doctest: +SKIP
        array([2])
    """

    id_column: str
    numeric_columns: list[str]
    log_columns: list[str]
    categorical_levels: dict[str, list[str]]
    fill_values_: dict[str, float] = field(default_factory=dict)
    center_: np.ndarray | None = None
    scale_: np.ndarray | None = None
    components_: np.ndarray | None = None
    explained_variance_ratio_: np.ndarray | None = None
    pca_mean_: np.ndarray | None = None
    centroids_: np.ndarray | None = None
    segment_ids_: np.ndarray | None = None
    #: Per segment (in the order of ``segment_ids_``), the distance to its centroid that 99%
    #: of its training customers are within: a new customer beyond it is unlike them.
    distance_p99_: np.ndarray | None = None
    config_: dict[str, Any] = field(default_factory=dict)
    #: With identity on: the roles, the fitted linkage model, its threshold and blocking rules
    #: (what scoring links new records to the training run's entities with).
    identity_: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.numeric_columns, self.categorical_levels)

    @property
    def usual_distance(self) -> dict[int, float]:
        """Segment id → the training run's 99th percentile of distance to its centroid
        (empty for a model saved before it was recorded)."""
        if self.distance_p99_ is None or self.segment_ids_ is None:
            return {}
        return {
            int(s): float(d) for s, d in zip(self.segment_ids_, self.distance_p99_, strict=True)
        }

    @property
    def n_segments(self) -> int:
        return len(self.fitted().centroids)

    def fitted(self) -> Fitted:
        """The learned arrays; a model that was never fitted is an error."""
        arrays = (
            self.center_,
            self.scale_,
            self.components_,
            self.pca_mean_,
            self.centroids_,
            self.segment_ids_,
        )
        if any(array is None for array in arrays):
            raise ModelError("this SegmentModel is not fitted yet; run the pipeline first")
        return Fitted(*(np.asarray(array) for array in arrays))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Feature rows → PCA coordinates."""
        fitted = self.fitted()
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(fitted.scale):
            raise ModelError(
                f"features have shape {features.shape}; the model expects "
                f"n_features={len(fitted.scale)} ({', '.join(self.feature_names)})"
            )
        scaled = (features - fitted.center) / fitted.scale
        return (scaled - fitted.pca_mean) @ fitted.components.T

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Feature rows → segment id of the nearest centroid."""
        return self.score(features)[0]

    def features_from_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Raw customer columns → feature rows, with the imputation and encoding learned.

        Example:
            >>> model.features_from_columns({"age": [31], "income": [None]})  # doctest: +SKIP
        """
        needed = [*self.numeric_columns, *self.categorical_levels]
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ModelError(
                f"input lacks feature column(s) {', '.join(map(repr, missing))}; the model "
                f"needs {', '.join(map(repr, needed))}"
            )
        parts = []
        for name in self.numeric_columns:
            values = np.array(columns[name], dtype=np.float64)
            values[np.isnan(values)] = self.fill_values_.get(name, 0.0)
            parts.append(kernels.signed_log1p(values) if name in self.log_columns else values)
        texts = {
            name: np.array(
                [MISSING_LEVEL if _is_missing(v) else str(v) for v in columns[name]], dtype=object
            )
            for name in self.categorical_levels
        }
        for one_hot in one_hot_columns(self.categorical_levels):
            text = texts[one_hot.column]
            hit = ~np.isin(text, one_hot.named) if one_hot.is_other else text == one_hot.level
            parts.append(hit.astype(np.float64))
        return np.column_stack(parts)

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment id, distance to its centroid, and confidence (see kernels.confidence)."""
        fitted = self.fitted()
        labels, nearest, runner_up = kernels.nearest_centroids(
            self.transform(features), fitted.centroids
        )
        return fitted.segment_ids[labels], nearest, kernels.confidence(nearest, runner_up)

    def example_rows(self) -> dict[str, list[Any]]:
        """One input row per segment: its centroid in original units (the log undone), and
        each categorical column's first level."""
        centroids = self.centroids_in_feature_space()
        columns: dict[str, list[Any]] = {}
        for j, name in enumerate(self.numeric_columns):
            values = centroids[:, j]
            if name in self.log_columns:
                values = np.sign(values) * np.expm1(np.abs(values))
            columns[name] = [float(v) for v in values]
        for name, levels in self.categorical_levels.items():
            columns[name] = [levels[0]] * len(centroids)
        return columns

    def centroids_in_feature_space(self) -> np.ndarray:
        """Centroids mapped back from PCA space to the feature space (before scaling)."""
        fitted = self.fitted()
        return kernels.to_feature_space(
            fitted.centroids,
            axes=fitted.components,
            pca_mean=fitted.pca_mean,
            scale=fitted.scale,
            center=fitted.center,
        )

    def matched_ids(self, centroids: np.ndarray, feature_names: list[str]) -> np.ndarray | None:
        """Ids of this (previous) model's segments for new centroids given in feature space.

        New and old centroids are compared in the feature space, each feature divided by this
        model's scale so no feature dominates by its unit; the Hungarian assignment pairs them.
        New centroids left without a partner get fresh ids above every id used so far. Returns
        None when the features differ, since the segments are then not comparable.
        """
        if feature_names != self.feature_names:
            return None
        fitted = self.fitted()
        old = self.centroids_in_feature_space() / fitted.scale
        new = centroids / fitted.scale
        cost = np.sqrt(((new[:, None, :] - old[None, :, :]) ** 2).sum(axis=2))
        from scipy.optimize import linear_sum_assignment  # noqa: PLC0415 -- 0.3 s to import

        rows, columns = linear_sum_assignment(cost)
        ids = np.full(len(new), -1, dtype=np.int64)
        ids[rows] = fitted.segment_ids[columns]
        unmatched = np.flatnonzero(ids < 0)
        ids[unmatched] = int(fitted.segment_ids.max()) + 1 + np.arange(len(unmatched))
        return ids

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible content (arrays as nested lists)."""
        return {
            key: value.tolist() if isinstance(value, np.ndarray) else value
            for key, value in asdict(self).items()
        }

    def to_json(self, **metadata: Any) -> str:
        """The model as JSON text (with extra metadata such as the run id)."""
        return json.dumps({"metadata": metadata, "model": self.to_dict()}, indent=2, default=str)

    def save(self, path: Path, **metadata: Any) -> Path:
        """Write the model as a JSON file (with extra metadata such as the run id)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(**metadata), encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, text: str, *, source: str) -> SegmentModel:
        """A model from the text :meth:`to_json` wrote; ``source`` names it in errors."""
        try:
            return cls.from_dict(json.loads(text)["model"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot read a segmatch model from {source!r}: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> SegmentModel:
        """Read a model file written by :meth:`save`."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"cannot read a segmatch model from {str(path)!r}: {exc}") from exc
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentModel:
        arrays: dict[str, Any] = {
            key: np.asarray(value) if key.endswith("_") and isinstance(value, list) else value
            for key, value in data.items()
        }
        return cls(**arrays)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
