"""SegmentModel: everything a fitted segmentation learned, as plain arrays.

It holds no engine object, so a model fitted by one engine is applied by any other, and it
serialises to JSON-compatible data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from segmatch import kernels
from segmatch.errors import ModelError


@dataclass
class SegmentModel:
    """Imputation, encoding, scaling, PCA and centroids of one fitted segmentation.

    Attributes ending in ``_`` are learned; :meth:`predict` and :meth:`transform` take the
    feature matrix built by the features stage (numeric columns, then one-hot levels).

    Example:
        >>> model = SegmentModel.from_arrays(  # doctest: +SKIP
        ...     feature_names=["a", "b"], center=..., scale=..., axes=..., centroids=...)
        >>> model.predict(features)  # doctest: +SKIP
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

    @property
    def feature_names(self) -> list[str]:
        return self.numeric_columns + [
            f"{column}={level}"
            for column, levels in self.categorical_levels.items()
            for level in levels
        ]

    @property
    def n_segments(self) -> int:
        self._check_fitted()
        assert self.centroids_ is not None
        return len(self.centroids_)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Feature rows → PCA coordinates."""
        self._check_fitted()
        assert self.scale_ is not None and self.components_ is not None
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.scale_):
            raise ModelError(
                f"features have shape {features.shape}; the model expects "
                f"n_features={len(self.scale_)} ({', '.join(self.feature_names)})"
            )
        scaled = (features - self.center_) / self.scale_
        return (scaled - self.pca_mean_) @ self.components_.T

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Feature rows → segment id of the nearest centroid."""
        labels, _ = kernels.nearest_centroids(self.transform(features), self.centroids_)
        assert self.segment_ids_ is not None
        return self.segment_ids_[labels]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible content (arrays as nested lists)."""
        return {
            key: value.tolist() if isinstance(value, np.ndarray) else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentModel:
        arrays = {
            key: np.asarray(value) if key.endswith("_") and isinstance(value, list) else value
            for key, value in data.items()
        }
        return cls(**arrays)

    def _check_fitted(self) -> None:
        if self.centroids_ is None or self.components_ is None:
            raise ModelError("this SegmentModel is not fitted yet; run the pipeline first")
