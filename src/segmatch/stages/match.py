"""match: each customer's most similar customers within its own segment."""

from __future__ import annotations

from dataclasses import dataclass

from segmatch import kernels
from segmatch.config import MatchConfig
from segmatch.engines.base import Engine, Frame
from segmatch.stages.cluster import Clustering


@dataclass(frozen=True)
class Matches:
    """Rows (id, segment, match_id, rank, distance, similarity), ``top_k`` per customer."""

    frame: Frame
    rows_in: int
    rows_out: int


def match_lookalikes(
    engine: Engine, *, config: MatchConfig, clustering: Clustering, id_column: str
) -> Matches:
    """Exact top-k nearest neighbours in PCA space, per segment, self excluded.

    Similarity is ``1 / (1 + distance)``: 1 for identical profiles. A customer in a segment of
    n members gets min(top_k, n − 1) matches.
    """
    frame = engine.top_k_within_segments(
        clustering.matrix, id_column=id_column, k=config.top_k, kernel=kernels.top_k_neighbours
    )
    return Matches(frame, clustering.rows_out, engine.count(frame))
