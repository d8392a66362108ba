"""The registered model as MLflow serves it: a pyfunc that scores raw customer columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segmatch.model import SegmentModel
from segmatch.tracking.store import import_mlflow

MODEL_ARTIFACT = "segment_model"


def pyfunc_class() -> type:
    mlflow = import_mlflow()
    import pandas as pd  # noqa: PLC0415 -- pandas comes with mlflow

    def load_context(self: Any, context: Any) -> None:
        self.model = SegmentModel.load(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        # The signature takes any type (CSV integers, decimals, text digits): numbers are
        # converted here, and a value that is not one is an error naming the column.
        columns: dict[str, Any] = {name: frame[name].to_numpy() for name in frame.columns}
        for name in self.model.numeric_columns:
            if name in frame.columns:
                try:
                    columns[name] = pd.to_numeric(frame[name]).to_numpy(dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    message = f"column {name!r} holds a value that is not a number: {exc}"
                    raise ValueError(message) from None
        segment, distance, confidence = self.model.score(self.model.features_from_columns(columns))
        return pd.DataFrame({"segment": segment, "distance": distance, "confidence": confidence})

    # MLflow reads predict's input type hint when the class is created: a DataFrame means a
    # table checked against the logged signature. It is set as a type object because this
    # module's annotations are strings that MLflow could not resolve (pandas is imported here).
    predict.__annotations__ = {"model_input": pd.DataFrame}
    return type(
        "SegmentModelPyfunc",
        (mlflow.pyfunc.PythonModel,),
        {
            "__doc__": "Scores raw customer columns: segment, distance to centroid, confidence.",
            "load_context": load_context,
            "predict": predict,
        },
    )


def signature(mlflow: Any, model: SegmentModel) -> Any:
    """Every feature column by name, of any type: MLflow then takes the columns in any order
    and names the missing ones, and refuses no integer (a CSV's ``Age``) a double would hold;
    the model converts them itself."""
    from mlflow.types.schema import AnyType, ColSpec, Schema  # noqa: PLC0415

    names = [*model.numeric_columns, *model.categorical_levels]
    outputs = [ColSpec("long", "segment"), ColSpec("double", "distance")]
    return mlflow.models.ModelSignature(
        inputs=Schema([ColSpec(AnyType(), name) for name in names]),
        outputs=Schema([*outputs, ColSpec("double", "confidence")]),
    )


def warm_model_logging() -> None:
    """Import what logging a pyfunc needs while the stages run."""
    import mlflow.models  # noqa: PLC0415
    import mlflow.pyfunc  # noqa: PLC0415, F401
    import pandas  # noqa: PLC0415, F401
