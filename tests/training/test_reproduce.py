"""``retailml reproduce``: a run retrains from its recorded inputs with the same metrics;
changed or missing data are reported, never silently trained on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

import guide
from registry.conftest import customers, empty_mlflow_store  # noqa: F401 - fixtures
from registry.conftest import tracking as registry_tracking  # noqa: F401 - fixture
from retailml.cli import main
from retailml.core.errors import NotFoundError, StateError
from retailml.core.settings import Settings
from retailml.core.workspace import Workspace
from retailml.training._reproduce import reproduce_run
from retailml.training._tracking import REPRODUCIBILITY_ARTIFACT
from retailml.training.model_trainer import ModelTrainer

REPO = Path(__file__).resolve().parents[2]
FEATURES = {
    "source_tables": ["bronze_sales"],
    "feature_sets": ["customer_rfm"],
    "validation_rules": {
        "missing_threshold": 0.5,
        "outlier_detection": False,
        "schema_validation": True,
    },
    "output_format": "parquet",
    "partitioning": ["year", "month"],
    "engine": "duckdb",
    "on_validation_failure": "warn",
}


@pytest.fixture
def tracking(registry_tracking: str) -> Iterator[str]:  # noqa: F811
    """MLflow in the test's workspace (a copy of a migrated store: no migrations per test)."""
    yield registry_tracking


def ingest(tmp_path: Path, name: str, start: str, end: str, rows: int = 2500) -> None:
    landing = tmp_path / "landing" / f"{name}.csv"
    code = main(
        [
            "data",
            "generate",
            "--rows",
            str(rows),
            "--output",
            str(landing),
            "--start",
            start,
            "--end",
            end,
            "--anomaly-rate",
            "0.02",
        ]
    )
    assert code == 0
    assert main(["data", "ingest", str(landing)]) == 0


def train(tmp_path: Path, config: dict[str, object], capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / f"{config['model_name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["train", "--config", str(path), "--json"]) == 0
    run_id: str = json.loads(capsys.readouterr().out)["run_id"]
    return run_id


@pytest.fixture
def segments_run(
    settings: Settings,
    tracking: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """A segmentation trained by `retailml train` on a feature set, from inside the git checkout."""
    ingest(tmp_path, "first", "2023-01-01", "2023-06-30")
    features = tmp_path / "features.yaml"
    features.write_text(yaml.safe_dump(FEATURES))
    assert main(["features", "build", "--config", str(features)]) == 0
    monkeypatch.chdir(REPO)  # the run records the checkout's commit
    return train(
        tmp_path,
        {
            "model_type": "customer_segmentation",
            "model_name": "segments",
            "hyperparameters": {"n_clusters": 3},
            "validation_strategy": "kfold",
            "n_splits": 2,
            "data": {"source": "feature_set", "name": "customer_rfm", "holdout": 0.2},
        },
        capsys,
    )


def test_every_run_records_the_guides_reproducibility_block(segments_run: str) -> None:
    block = yaml.safe_load(
        guide.block("### 1. Version Control and Reproducibility", language="yaml")
    )
    wanted = block["reproducibility"]
    run = MlflowClient().get_run(segments_run)
    # seed: 42 is the default seed setting, recorded with every run.
    assert run.data.params["seed"] == str(wanted["seed"])
    assert run.data.tags["retailml.git_commit"] == run.data.tags["mlflow.source.git.commit"]
    assert len(run.data.tags["retailml.git_commit"]) == 40
    assert run.data.tags["retailml.git_dirty"] in {"true", "false"}
    assert run.data.tags["retailml.version.scikit-learn"]
    assert len(run.data.tags["retailml.environment_digest"]) == 16
    assert len(run.data.tags["retailml.source_digest"]) == 16
    record = mlflow.artifacts.load_dict(f"runs:/{segments_run}/{REPRODUCIBILITY_ARTIFACT}")
    assert record["code_version"]["git_commit"] == run.data.tags["retailml.git_commit"]
    assert record["environment"]["packages"]["mlflow"] == mlflow.__version__
    files = record["inputs"]["feature_set.customer_rfm"]
    assert files and all(len(digest) == 64 for digest in files.values())
    assert record["inputs"]["silver"]  # the parts the feature set was built from


def test_a_run_reproduces_with_the_same_metrics(
    segments_run: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = reproduce_run(segments_run)
    assert outcome.ok, outcome.table()
    assert outcome.data_source.startswith("job ")
    assert {m.name for m in outcome.metrics} >= {"silhouette_score", "davies_bouldin_score"}
    assert all(m.delta == 0 for m in outcome.metrics)
    assert [(c.name, c.status) for c in outcome.inputs] == [
        ("feature_set.customer_rfm", "unchanged")
    ]
    assert not any("git commit" in w or "source code" in w for w in outcome.warnings)
    reproduced = MlflowClient().get_run(str(outcome.reproduced_run_id))
    assert reproduced.data.tags["retailml.reproduces"] == segments_run

    capsys.readouterr()
    assert main(["reproduce", segments_run, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] and printed["rows"]["recorded"] == printed["rows"]["reproduced"]


def test_a_changed_data_file_is_reported_and_fails_the_reproduction(
    segments_run: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    version_dir = next(
        (Workspace.from_settings(settings).features / "customer_rfm").glob("[0-9a-f]*")
    )
    part = sorted(version_dir.rglob("*.parquet"))[-1]
    table = pq.ParquetFile(part).read()  # the file alone, without the partition columns
    column = table.schema.get_field_index("monetary_total")
    tripled = pc.multiply(table.column(column), 3)
    pq.write_table(table.set_column(column, "monetary_total", tripled), part)

    outcome = reproduce_run(segments_run)
    (check,) = outcome.inputs
    assert check.status == "changed"
    assert check.changed == (part.relative_to(version_dir.parent).as_posix(),)
    assert outcome.data_changed and not outcome.ok

    capsys.readouterr()
    assert main(["reproduce", segments_run]) == 1
    printed = capsys.readouterr().out
    assert "input changed" in printed and part.name in printed
    assert "NOT REPRODUCED" in printed


def test_metrics_beyond_the_tolerance_fail(
    segments_run: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorded metric 10 % off the retraining fails at the default tolerance, passes at 20 %."""
    run = MlflowClient().get_run(segments_run)
    client = MlflowClient()
    # A run whose recorded metric is off by 10 %: the reproduction must flag it.
    client.log_metric(segments_run, "silhouette_score", run.data.metrics["silhouette_score"] * 1.1)
    client.set_tag(segments_run, "retailml.source_digest", "0" * 16)  # trained by other code
    outcome = reproduce_run(segments_run, metric_tolerances={"davies_bouldin_score": 0.5})
    by_name = {m.name: m for m in outcome.metrics}
    assert not by_name["silhouette_score"].within
    assert by_name["davies_bouldin_score"].tolerance == 0.5
    assert not outcome.metrics_match and not outcome.ok
    assert any("source code differs" in w for w in outcome.warnings)
    capsys.readouterr()
    assert main(["reproduce", segments_run, "--tolerance", "0.2"]) == 0


def test_a_feature_version_that_is_gone_fails_clearly(
    segments_run: str, settings: Settings
) -> None:
    import shutil

    version_dir = next(
        (Workspace.from_settings(settings).features / "customer_rfm").glob("[0-9a-f]*")
    )
    shutil.rmtree(version_dir)
    with pytest.raises(NotFoundError, match=rf"customer_rfm.*{version_dir.name}.*rebuild"):
        reproduce_run(segments_run)


def test_a_silver_run_is_pinned_to_its_data_version_and_its_parts_must_exist(
    settings: Settings, tracking: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ingest(tmp_path, "first", "2023-01-01", "2023-03-31", rows=1500)
    run_id = train(
        tmp_path,
        {
            "model_type": "anomaly_detection",
            "model_name": "anomalies",
            "n_splits": 2,
            "data": {"source": "silver"},
        },
        capsys,
    )
    # New data arrives: the reproduction still reads the version the run trained on.
    ingest(tmp_path, "second", "2023-04-01", "2023-04-30", rows=800)
    outcome = reproduce_run(run_id)
    assert outcome.ok, outcome.table()
    assert [(c.name, c.status) for c in outcome.inputs] == [("silver", "unchanged")]

    first_part = sorted(
        Workspace.from_settings(settings).transactions.glob("part-*.parquet"),
        key=lambda p: p.stat().st_mtime_ns,
    )[0]
    first_part.unlink()
    with pytest.raises(NotFoundError, match=rf"silver part.*{first_part.name}.*restore"):
        reproduce_run(run_id)
    capsys.readouterr()
    assert main(["reproduce", run_id]) == 1
    assert first_part.name in capsys.readouterr().err


def test_a_run_without_a_recorded_data_selection_needs_its_data(
    settings: Settings, tracking: str
) -> None:
    frame = customers(120)
    result = ModelTrainer(
        model_type="customer_segmentation", n_splits=2, hyperparameters={"n_clusters": 3}
    ).train_sync(frame)
    assert result.run_id is not None
    with pytest.raises(StateError, match=r"no training job recorded.*--config.*--data"):
        reproduce_run(result.run_id)
    outcome = reproduce_run(result.run_id, data=pd.DataFrame(frame))
    assert outcome.ok and outcome.data_source == "data file"
