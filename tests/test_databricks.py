"""Databricks: the workspace's MLflow and Unity Catalog names, and the example bundle.

Databricks itself cannot be reached from here; these tests check what segmatch decides from
the environment Databricks sets, and that the example files name real entry points and keys.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
import yaml
from click import Group

from segmatch.cli import app
from segmatch.config import TrackingConfig
from segmatch.config_loading import load_config
from segmatch.errors import ConfigError
from segmatch.tracking.store import check_model_name, experiment_name, tracking_uri

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "databricks"


@pytest.fixture
def databricks(monkeypatch):
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_on_databricks_mlflow_is_the_workspaces(databricks):
    config = TrackingConfig()
    assert tracking_uri(config) == "databricks"
    assert experiment_name(config) == "/Shared/segmatch"
    assert (
        experiment_name(TrackingConfig(experiment="/Users/ana/segments")) == "/Users/ana/segments"
    )
    assert tracking_uri(TrackingConfig(uri="sqlite:///x.db")) == "sqlite:///x.db"
    with pytest.raises(ConfigError, match=r"Unity Catalog as catalog\.schema\.model"):
        check_model_name(config)
    check_model_name(TrackingConfig(model_name="main.crm.segmatch"))


def test_elsewhere_mlflow_stays_local(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(TrackingConfig()).startswith("sqlite:///")
    assert experiment_name(TrackingConfig()) == "segmatch"
    check_model_name(TrackingConfig())


def test_the_bundle_runs_a_real_entry_point_with_a_valid_config():
    bundle = yaml.safe_load((EXAMPLE / "databricks.yml").read_text())
    task = bundle["resources"]["jobs"]["segment_customers"]["tasks"][0]["python_wheel_task"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert task["package_name"] == "segmatch" and task["entry_point"] in scripts
    command, config_file, *options = task["parameters"]
    assert isinstance(app, Group) and command in app.commands
    assert Path(config_file).name == "job.yaml" and "job.yaml" in bundle["sync"]["include"]
    assert options == ["--engine", "spark"]
    config = load_config(EXAMPLE / "job.yaml")
    assert config.output.path.startswith("/Volumes/")
    assert config.output.tables_in == "main.crm"
    assert config.tracking.model_name.count(".") == 2


def test_the_notebook_calls_the_api_with_the_clusters_session():
    tree = ast.parse((EXAMPLE / "segment_customers.py").read_text())
    calls = {
        node.func.id: node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert {"run_pipeline", "score_customers", "build_config"} <= set(calls)
    assert [k.arg for k in calls["run_pipeline"].keywords] == ["spark"]
    settings = ast.literal_eval(calls["build_config"].args[0])
    from segmatch.config_loading import build_config  # noqa: PLC0415

    assert build_config(settings, source="the notebook").engine == "spark"
