"""The floor a user could write in an afternoon: pandas + scikit-learn, no tracking, no storage.

Usage: python -m benchmarks.sklearn_script DATA.parquet --k 6 --components 5
"""

from __future__ import annotations

import argparse
import json
import time

NUMERIC = ["age", "income", "recency_days", "frequency", "monetary", "tenure_days"]
SKEWED = ["income", "recency_days", "frequency", "monetary"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument(
        "--store",
        help="write ids, PCA coordinates and segments to this Parquet file after timing (for "
        "the quality figures; the timed run stores nothing)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415
    from sklearn.cluster import KMeans  # noqa: PLC0415
    from sklearn.decomposition import PCA  # noqa: PLC0415
    from sklearn.metrics import silhouette_score  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    stages: dict[str, float] = {"startup": time.perf_counter() - started}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = now - clock
        clock = now

    frame = pd.read_parquet(args.data)
    lap("ingest")
    frame = frame[frame["idcliente"].notna() & (frame["idcliente"].str.strip() != "")]
    frame = frame[np.isfinite(frame["monetary"]) & frame["age"].between(16, 110)]
    frame = frame.sort_values("updated_at").drop_duplicates("idcliente", keep="last")
    frame["income"] = frame["income"].fillna(frame["income"].median())
    lap("clean")
    features = frame[NUMERIC].astype(float)
    features[SKEWED] = np.log1p(features[SKEWED])
    lap("features")
    scaled = StandardScaler().fit_transform(features.to_numpy())
    reduced = PCA(n_components=args.components, random_state=42).fit_transform(scaled)
    lap("scale_pca")
    labels = KMeans(n_clusters=args.k, random_state=42, n_init=1).fit_predict(reduced)
    lap("kmeans")
    silhouette = silhouette_score(reduced, labels, sample_size=10_000, random_state=42)
    lap("silhouette")
    print(json.dumps({
        "pipeline": "sklearn script", "stages": stages, "silhouette": float(silhouette),
        "total_seconds": time.perf_counter() - started, "customers": len(frame),
    }))  # fmt: skip
    if args.store:
        stored = {"idcliente": frame["idcliente"].to_numpy(), "segment": labels}
        stored |= {f"pc_{j + 1}": reduced[:, j] for j in range(reduced.shape[1])}
        pd.DataFrame(stored).to_parquet(args.store)


if __name__ == "__main__":
    main()
