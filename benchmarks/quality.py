"""How good each pipeline's segmentation is, from what it stored, outside its timing.

For every pipeline: the exact squared-Euclidean silhouette and the inertia, both on every
customer in that pipeline's own PCA coordinates (each standardises, then keeps 5 components),
and the adjusted Rand index of its segments against the latent segment the generator drew for
each customer (``segmatch.synthetic.latent_segments``; ids ``C00000001`` … number the rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from sklearn.metrics import adjusted_rand_score

from segmatch.kernels import ClusterSums, cluster_sums_kernel, silhouette_kernel
from segmatch.synthetic import latent_segments

#: Where each pipeline leaves its customers' ids, coordinates and segments.
STORED = {
    "baseline": "segments",
    "segmatch spark": "out/segments",
    "segmatch local": "out/segments",
    "segmatch local again": "out/segments",
    "sklearn script": "labels.parquet",
}


def stored_segments(pipeline: str, work: Path) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Ids, coordinates (rows × components) and segment labels a pipeline wrote."""
    location = work / STORED[pipeline]
    if pipeline.startswith("segmatch"):
        table = DeltaTable(str(location)).to_pyarrow_table()
        axes = sorted((c for c in table.column_names if c.startswith("pc_")), key=_axis)
        coordinates = np.column_stack([table[c].to_numpy() for c in axes])
    elif pipeline == "baseline":
        table = pq.read_table(location, columns=["idcliente", "pca", "segment"])
        # MLlib's dense vectors are stored as a struct holding a list of values.
        values = pc.struct_field(table["pca"], "values").combine_chunks()
        coordinates = values.flatten().to_numpy().reshape(len(table), -1)
    else:
        table = pq.read_table(location)
        axes = sorted((c for c in table.column_names if c.startswith("pc_")), key=_axis)
        coordinates = np.column_stack([table[c].to_numpy() for c in axes])
    return table["idcliente"], coordinates, table["segment"].to_numpy()


def quality(ids: pa.Array, coordinates: np.ndarray, labels: np.ndarray, rows: int) -> dict:
    """Exact silhouette, inertia and adjusted Rand index against the latent segments."""
    _, compact = np.unique(labels, return_inverse=True)
    k, d = int(compact.max()) + 1, coordinates.shape[1]
    sums = ClusterSums.from_flat(cluster_sums_kernel(k)(coordinates, compact), k, d)
    silhouette = float(silhouette_kernel(sums)(coordinates, compact)[0] / len(compact))
    truth = latent_segments(rows=rows, seed=42)
    position = pc.cast(pc.utf8_slice_codeunits(ids, 1), pa.int64()).to_numpy() - 1
    return {
        "silhouette_exact": silhouette,
        "inertia": sums.inertia(),
        "ari": float(adjusted_rand_score(truth[position], compact)),
    }


def _axis(name: str) -> int:
    return int(name.removeprefix("pc_"))
