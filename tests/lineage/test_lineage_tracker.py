"""Lineage: the guide's snippet, automatic events from every stage, queries both ways, Marquez."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

import guide
from retailml.cli import main
from retailml.core.errors import NotFoundError
from retailml.core.lineage import emit_run, read_events
from retailml.core.settings import Settings
from retailml.data.generate import GeneratorConfig, generate_transactions, write_transactions
from retailml.data.ingest import ingest_file
from retailml.feature_engineering.feature_pipeline import FeatureEngineeringPipeline
from retailml.lineage.lineage_tracker import LineageTracker
from retailml.registry.model_registry import ModelRegistry
from retailml.training.model_trainer import ModelTrainer


def test_guide_lineage_snippet_runs_and_answers_both_directions(settings: Settings) -> None:
    namespace: dict[str, Any] = {}
    guide.run(guide.block("### 3. Data and Model Lineage"), namespace)
    assert namespace["data_lineage"].job == "sales_feature_engineering"
    assert namespace["model_lineage"].outputs == ("model.sales_forecast_prophet",)

    tracker = LineageTracker()
    up = tracker.upstream("model.sales_forecast_prophet", version="1.2.0")
    (step,) = up.steps
    assert step.inputs == ("feature_store.sales_features_v2024_01",)
    assert step.code_version == "commit_abc123"
    assert step.parameters == {"seasonality_mode": "multiplicative"}
    assert step.features == ("date", "seasonality", "trend", "external_factors")

    down = tracker.downstream("bronze_layer.sales_transactions")
    assert set(down.datasets) == {
        "feature_store.customer_rfm_features",
        "feature_store.product_features",
    }
    assert down.steps[0].transformations == (
        "rfm_calculation",
        "product_aggregation",
        "currency_normalization",
    )
    # Every event is a valid OpenLineage COMPLETE run event.
    events = list(read_events())
    assert [e["eventType"] for e in events] == ["COMPLETE", "COMPLETE"]
    assert all(e["schemaURL"].startswith("https://openlineage.io/spec/") for e in events)


def test_unknown_datasets_list_what_is_recorded(settings: Settings) -> None:
    tracker = LineageTracker()
    tracker.track_data_pipeline("p", inputs=["a"], outputs=["b"])
    with pytest.raises(NotFoundError, match="among: a, b"):
        tracker.upstream("model.nothing")
    with pytest.raises(NotFoundError, match=r"at version '9\.9\.9'"):
        tracker.upstream("b", version="9.9.9")


@pytest.fixture
def trained_chain(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """Ingest a file, build customer_rfm, train on it and register the model."""
    source = tmp_path / "sales.csv"
    write_transactions(generate_transactions(GeneratorConfig(rows=6000, seed=3)), source)
    ingest_file(source, settings=settings)
    pipeline = FeatureEngineeringPipeline(
        config={"feature_sets": ["customer_rfm"]}, settings=settings
    )
    built = asyncio.run(pipeline.execute())
    rfm = built["customer_rfm"]
    result = ModelTrainer(
        model_type="customer_segmentation", hyperparameters={"n_clusters": 3}, n_splits=2
    ).train_sync(
        rfm.table("pandas"),
        model_name="segments",
        data_version=rfm.input_data_version,
        feature_set_versions={"customer_rfm": rfm.version},
    )
    with ModelRegistry(settings) as registry:
        registry.register_model("segments", "1.0.0", result, metadata={}, tags=[])
    yield rfm.version


def test_every_stage_records_lineage_and_queries_walk_the_whole_chain(
    trained_chain: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = LineageTracker()
    jobs = [step.job for step in tracker.steps()]
    assert jobs[0] == "ingest"
    assert "features.customer_rfm" in jobs
    assert "train.segments" in jobs
    assert jobs[-1] == "register.segments"

    up = tracker.upstream("model.segments", version="1.0.0")
    assert "file.sales.csv" in up.datasets
    assert "silver.transactions" in up.datasets
    assert "feature_set.customer_rfm" in up.datasets
    train = next(s for s in up.steps if s.job == "train.segments")
    assert train.versions["feature_set.customer_rfm"] == trained_chain
    assert train.parameters["n_clusters"] == 3

    down = tracker.downstream("silver.transactions")
    assert "feature_set.customer_rfm" in down.feature_sets
    assert down.models == ("model.segments",)

    assert main(["lineage", "show", "--model", "segments", "--version", "1.0.0", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["direction"] == "upstream" and "file.sales.csv" in answer["datasets"]
    assert main(["lineage", "show", "silver.transactions", "--downstream"]) == 0
    assert "model.segments" in capsys.readouterr().out


def test_lineage_show_errors_are_one_line(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lineage", "show"]) == 1
    assert "a dataset argument or --model" in capsys.readouterr().err
    assert main(["lineage", "show", "--model", "ghost"]) == 1
    assert "model.ghost" in capsys.readouterr().err


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:  # http.server's naming
        length = int(self.headers["Content-Length"])
        _Collector.received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_events_also_go_to_a_marquez_compatible_endpoint(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        emit_run(
            "job.http",
            inputs=["a"],
            outputs=["b"],
            settings=settings.model_copy(update={"lineage_url": url}),
        )
    finally:
        server.shutdown()
    (request,) = _Collector.received
    assert request["path"] == "/api/v1/lineage"
    assert request["body"]["job"]["name"] == "job.http"
    assert request["body"]["eventType"] == "COMPLETE"


def test_an_unreachable_endpoint_never_breaks_the_work(settings: Settings) -> None:
    offline = settings.model_copy(update={"lineage_url": "http://127.0.0.1:1"})
    event = emit_run("job.offline", inputs=["a"], outputs=["b"], settings=offline)
    assert event is not None  # still in the local file
    assert [e["job"]["name"] for e in read_events(offline)] == ["job.offline"]


def test_lineage_respects_time_data_that_arrived_after_a_model_is_not_its_input(
    settings: Settings,
) -> None:
    tracker = LineageTracker()
    tracker.track_data_pipeline("ingest", inputs=["file.january"], outputs=["silver.sales"])
    tracker.track_data_pipeline("train", inputs=["silver.sales"], outputs=["model.forecast"])
    tracker.track_data_pipeline("ingest", inputs=["file.february"], outputs=["silver.sales"])
    tracker.track_data_pipeline("retrain", inputs=["silver.sales"], outputs=["model.forecast_v2"])

    first = tracker.upstream("model.forecast")
    assert "file.january" in first.datasets
    assert "file.february" not in first.datasets
    later = tracker.upstream("model.forecast_v2")
    assert {"file.january", "file.february"} <= set(later.datasets)
    # Downstream, February's file feeds the retrained model only.
    assert tracker.downstream("file.february").models == ("model.forecast_v2",)
    assert set(tracker.downstream("file.january").models) == {
        "model.forecast",
        "model.forecast_v2",
    }
