"""The registered model as MLflow serves it: a pyfunc that scores raw customer columns, or
raw transactions when it was trained on them, cleaned as the training run cleaned them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from segmatch import heap
from segmatch.config import InputConfig
from segmatch.errors import ModelError
from segmatch.model import SegmentModel
from segmatch.tracking.store import import_mlflow

MODEL_ARTIFACT = "segment_model"


def pyfunc_class() -> type:
    mlflow = import_mlflow()
    import pandas as pd  # noqa: PLC0415 -- pandas comes with mlflow

    def load_context(self: Any, context: Any) -> None:
        self.model = SegmentModel.load(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context, model_input, params=None):
        return score_frame(self.model, pd.DataFrame(model_input))

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


def score_frame(model: SegmentModel, frame: Any) -> Any:
    """Segment, distance and confidence of each row of a pandas frame of customers (or, for a
    model trained on transactions, of each customer of a frame of transactions, with its id).

    Numbers are read in the training input's notation; blanks and values that are not numbers
    are imputed with the training medians, as the run imputed its own blanks."""
    import pandas as pd  # noqa: PLC0415 -- pandas comes with mlflow

    source = InputConfig.model_validate(model.config_["input"]) if model.config_ else None
    ids = None
    if (
        source is not None
        and source.transactions is not None
        and _holds_transactions(frame, source)
    ):
        frame = _customers_from_transactions(frame, model, source)
        ids = frame[model.id_column]
    decimal = (source.decimal if source else None) or "."
    thousands = source.thousands if source else None
    columns: dict[str, Any] = {name: frame[name].to_numpy() for name in frame.columns}
    for name in model.numeric_columns:
        if name in frame.columns:
            columns[name] = _numbers(frame[name], decimal=decimal, thousands=thousands)
    segment, distance, confidence = model.score(model.features_from_columns(columns))
    scores = {"segment": segment, "distance": distance, "confidence": confidence}
    return pd.DataFrame(scores if ids is None else {model.id_column: ids.to_numpy(), **scores})


def _numbers(values: Any, *, decimal: str, thousands: str | None) -> np.ndarray:
    """A column as float64: numbers as they are, text read in the input's notation; NaN where
    a cell is blank or not a number (imputed next)."""
    import pandas as pd  # noqa: PLC0415 -- pandas comes with mlflow

    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    text = values.astype("string").str.strip()
    if thousands is not None:
        text = text.str.replace(thousands, "", regex=False)
    if decimal != ".":
        text = text.str.replace(decimal, ".", regex=False)
    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _holds_transactions(frame: Any, source: InputConfig) -> bool:
    """Whether a frame holds transactions (the timestamp the model aggregated), not the
    per-customer columns derived from them."""
    assert source.transactions is not None
    return source.transactions.timestamp in frame.columns


def _customers_from_transactions(frame: Any, model: SegmentModel, source: InputConfig) -> Any:
    """The customers of a frame of transactions, aggregated by the training run's plan (through
    the local engine, the same code as ``segmatch score``)."""
    from segmatch.engines import make_engine  # noqa: PLC0415 -- the engine loads on demand
    from segmatch.stages.columns import transaction_columns  # noqa: PLC0415
    from segmatch.stages.transactions import customers_from_transactions  # noqa: PLC0415

    assert source.transactions is not None
    missing = [c for c in (model.id_column,) if c not in frame.columns]
    if missing:
        raise ModelError(f"the transactions lack the id column {missing[0]!r}")
    engine = make_engine("local")
    with tempfile.TemporaryDirectory(prefix="segmatch-score-") as folder:
        # Written as text and read as a CSV input is, so the lines are typed as in training.
        path = str(Path(folder) / "transactions.csv")
        frame.to_csv(path, index=False)
        types = {model.id_column: "str", **source.types}
        lines = engine.read(path=path, fmt="csv", types=types, separator=",")
        plan = transaction_columns(source.transactions, id_column=model.id_column)
        customers = customers_from_transactions(engine, lines, columns=plan)
        return engine.to_arrow(customers).to_pandas()


def signature(mlflow: Any, model: SegmentModel) -> Any:
    """Every feature column by name, of any type and optional: the model takes the columns in
    any order, refuses no integer (a CSV's ``Age``) a double would hold, converts them itself,
    and names a missing one in one line of its own (as does a frame of transactions, which
    holds none of the derived columns)."""
    from mlflow.types.schema import AnyType, ColSpec, Schema  # noqa: PLC0415

    names = [*model.numeric_columns, *model.categorical_levels, *_transaction_names(model)]
    outputs = [ColSpec("long", "segment"), ColSpec("double", "distance")]
    return mlflow.models.ModelSignature(
        inputs=Schema([ColSpec(AnyType(), name, required=False) for name in names]),
        outputs=Schema([*outputs, ColSpec("double", "confidence")]),
    )


def _transaction_names(model: SegmentModel) -> list[str]:
    """The columns of the transactions a model was trained on (none for a customer table)."""
    source = InputConfig.model_validate(model.config_["input"]) if model.config_ else None
    if source is None or source.transactions is None:
        return []
    t = source.transactions
    named = (model.id_column, t.timestamp, t.amount, t.quantity, t.unit_price, t.invoice)
    return [c for c in dict.fromkeys((*named, t.category)) if c is not None]


def warm_model_logging() -> None:
    """Import what logging a pyfunc needs while the stages run."""
    import mlflow.models  # noqa: PLC0415
    import mlflow.pyfunc  # noqa: PLC0415, F401
    import pandas  # noqa: PLC0415, F401

    heap.settle()
