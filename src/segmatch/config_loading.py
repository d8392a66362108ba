"""A Config from a YAML file or a mapping, with overrides, and errors that name the key.

Example:
    >>> build_config({"input": {"path": "customers.csv"}}, source="example").cluster.k_max
    10
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from segmatch.config import Config, OutputConfig, model_name_for
from segmatch.errors import ConfigError, did_you_mean
from segmatch.locations import is_table_name, is_uri

Overrides = Mapping[str, Any] | Mapping[tuple[str, ...], Any]
"""Keys to set on a config: dotted (``"cluster.k"``) or as parts (``("spark", "conf", …)``)."""


def load_config(path: str | Path, overrides: Overrides | None = None) -> Config:
    """Read a YAML config; relative paths in it are taken from the config file's folder.

    Example:
        >>> cfg = load_config("examples/mixed_customers.yaml")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} should hold a mapping of sections")
    apply_overrides(raw, overrides or {})
    tracking = raw.get("tracking")
    if isinstance(tracking, dict | None) and not (tracking or {}).get("model_name"):
        raw["tracking"] = {**(tracking or {}), "model_name": model_name_for(path.stem)}
    output = raw.get("output")
    if isinstance(output, dict | None) and not (output or {}).get("path"):
        # Each config its own folder by default: two data sets never share tables.
        raw["output"] = {**(output or {}), "path": f"{OutputConfig().path}/{path.stem}"}
    return build_config(raw, source=str(path), base_dir=path.parent)


def build_config(raw: dict[str, Any], *, source: str, base_dir: Path | None = None) -> Config:
    """Validate a mapping into a Config, resolving relative paths against base_dir."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    if base_dir is None:
        return config
    return config.model_copy(
        update={
            "input": config.input.model_copy(
                update={"path": _resolve(config.input.path, base_dir)}
            ),
            "output": config.output.model_copy(
                update={"path": _resolve(config.output.path, base_dir)}
            ),
        }
    )


def _resolve(location: str, base_dir: Path) -> str:
    if is_uri(location) or Path(location).is_absolute():
        return location
    if is_table_name(location, base_dir=base_dir):
        return location
    return str((base_dir / location).resolve())


def apply_overrides(raw: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """Set keys in a raw config mapping: dotted (``cluster.k``), or as parts (``("spark",
    "conf", "spark.sql.shuffle.partitions")``) when a part holds dots; returns the mapping."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".") if isinstance(key, str) else key
        node = raw
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return raw


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config in {source}:"]
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(loc[-1], _fields_at(loc[:-1]))
            lines.append(f"  - unknown key {key!r}.{hint}")
        elif err["type"] == "missing":
            lines.append(f"  - missing key {key!r}")
        else:
            value = err.get("input")
            shown = f" (got {value!r})" if not isinstance(value, dict) else ""
            lines.append(f"  - {key}: {err['msg']}{shown}")
    return "\n".join(lines)


def _fields_at(loc: list[str]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = _model_in(field.annotation)
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _model_in(annotation: Any) -> Any:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
