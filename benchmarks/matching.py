"""Top-10 lookalikes within each segment: segmatch's kernel against scikit-learn's, and recall.

Usage: python -m benchmarks.matching [--rows 1000000] [--k 6] [--sample 2000]

Builds PCA coordinates and segments the way a run does (local engine), then times segmatch's
per-segment top-10 against per-segment scikit-learn ``NearestNeighbors`` on the same points,
and measures recall@10 of segmatch's answer against exact neighbours on a sample of customers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

from segmatch.api import demo_config, run_pipeline
from segmatch.neighbours import top_k_neighbours
from segmatch.storage import read_delta
from segmatch.synthetic import generate_customers


def per_segment(points: np.ndarray, labels: np.ndarray, search) -> list[np.ndarray]:
    answers = []
    for segment in np.unique(labels):
        members = np.flatnonzero(labels == segment)
        neighbours = search(points[members])
        answers.append(members[neighbours])
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--sample", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = generate_customers(Path(folder) / "c.parquet", rows=args.rows, seed=42)
        base = demo_config(data, Path(folder) / "out", tracking=False, categorical=())
        config = base.model_copy(
            update={
                "cluster": base.cluster.model_copy(update={"k": args.k}),
                "reduce": base.reduce.model_copy(update={"components": 5, "variance": None}),
                "lookalikes": base.lookalikes.model_copy(update={"enabled": False}),
                "output": base.output.model_copy(update={"report": False, "checkpoints": False}),
            }
        )
        run_pipeline(config)
        segments = read_delta(Path(folder) / "out" / "segments")
    points = np.column_stack([segments[f"pc_{j}"].to_numpy() for j in range(1, 6)])
    labels = segments["segment"].to_numpy()

    start = time.perf_counter()
    ours = per_segment(points, labels, lambda p: top_k_neighbours(p, 10)[0])
    ours_seconds = time.perf_counter() - start

    start = time.perf_counter()

    def sklearn_search(segment_points: np.ndarray) -> np.ndarray:
        index = NearestNeighbors(n_neighbors=11).fit(segment_points)
        return index.kneighbors(segment_points, return_distance=False)[:, 1:]

    per_segment(points, labels, sklearn_search)
    sklearn_seconds = time.perf_counter() - start

    rng = np.random.default_rng(0)
    hits = total = 0
    order = np.concatenate([np.flatnonzero(labels == s) for s in np.unique(labels)])
    answer = np.concatenate(ours)
    for row in rng.choice(len(points), size=args.sample, replace=False):
        members = np.flatnonzero(labels == labels[row])
        distances = ((points[members] - points[row]) ** 2).sum(axis=1)
        distances[members == row] = np.inf
        exact = set(members[np.argsort(distances)[:10]])
        found = set(answer[np.flatnonzero(order == row)[0]])
        hits += len(exact & found)
        total += 10
    print(f"{args.rows:,} customers, k={args.k}, 5 PCA components, top-10 within segment:")
    print(f"  segmatch kernel         {ours_seconds:6.1f} s")
    ratio = sklearn_seconds / ours_seconds
    print(f"  sklearn NearestNeighbors {sklearn_seconds:6.1f} s  ({ratio:.1f}× slower)")
    print(f"  recall@10 on {args.sample:,} customers: {hits / total:.4f}")
    print(json.dumps({
        "rows": args.rows, "segmatch_seconds": ours_seconds, "sklearn_seconds": sklearn_seconds,
        "sklearn_over_segmatch": ratio, "recall_at_10": hits / total, "recall_sample": args.sample,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
