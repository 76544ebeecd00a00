"""The prediction service over HTTP: predictions, credentials, errors, metrics, the log."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from retailml.core.db import PlatformDB
from retailml.core.db_deploy import PredictionLogEntry

from .helpers import ADMIN, AUTH, deploy, serving_settings

PREDICT = "/api/v1/ml/predict"


def post(client: TestClient, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post(path, json=body, headers=AUTH if headers is None else headers)


# --- predictions ---------------------------------------------------------------------------


def test_predict_returns_the_guides_response(client: TestClient) -> None:
    response = post(
        client,
        PREDICT,
        {"features": {"series_id": "s1"}, "horizon": 7, "confidence_interval": 0.95},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "sales_forecast"  # the default model
    assert body["model_version"] == "1.0.0"  # the active deployment
    assert len(body["prediction"]) == 7
    assert len(body["dates"]) == 7
    for low, value, high in zip(
        body["confidence_lower"], body["prediction"], body["confidence_upper"], strict=True
    ):
        assert low <= value <= high
    assert body["prediction_timestamp"].startswith("20")
    assert body["details"]["series_id"] == ["s1"]


def test_a_wider_interval_is_wider(client: TestClient) -> None:
    def width(level: float) -> float:
        body = post(
            client, PREDICT, {"features": {"series_id": "s0"}, "confidence_interval": level}
        ).json()
        return float(body["confidence_upper"][0] - body["confidence_lower"][0])

    assert width(0.99) > width(0.8) > 0


def test_forecast_route_takes_series_and_horizon(client: TestClient) -> None:
    response = post(client, "/api/v1/ml/forecast", {"series_id": "s0", "horizon": 3})
    assert response.status_code == 200, response.text
    assert len(response.json()["prediction"]) == 3


def test_a_pinned_version_skips_routing(client: TestClient) -> None:
    body = post(client, PREDICT, {"features": {"series_id": "s0"}, "model_version": "1.1.0"}).json()
    assert body["model_version"] == "1.1.0" and body["arm"] is None


def test_segment_with_inline_features_uses_the_production_alias(client: TestClient) -> None:
    features = {"customer_id": 1, "recency": 12.0, "frequency": 25.0, "monetary": 4000.0}
    response = post(client, "/api/v1/ml/segment", {"features": features})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "customer_segmentation" and body["model_version"] == "1.0.0"
    assert len(body["prediction"]) == 1 and isinstance(body["prediction"][0], int)
    assert body["details"]["segment_name"][0]


def test_predict_takes_a_list_of_feature_rows(client: TestClient) -> None:
    rows = [
        {"customer_id": 1, "recency": 12.0, "frequency": 25.0, "monetary": 4000.0},
        {"customer_id": 2, "recency": 290.0, "frequency": 1.0, "monetary": 40.0},
    ]
    body = post(client, PREDICT, {"model_name": "customer_segmentation", "features": rows}).json()
    assert len(body["prediction"]) == 2
    assert body["prediction"][0] != body["prediction"][1]


def _demand_rows(home: Path) -> list[dict[str, Any]]:
    example = home / "models" / "cache" / "demand_prediction" / "1.0.0" / "input_example.json"
    data = json.loads(example.read_text())
    rows = [dict(zip(data["columns"], row, strict=True)) for row in data["data"][-2:]]
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows
    ]


def test_demand_predicts_feature_rows(client: TestClient, serving_home: Path) -> None:
    response = post(client, "/api/v1/ml/demand", {"features": _demand_rows(serving_home)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "demand_prediction" and len(body["prediction"]) == 2
    assert all(isinstance(v, float) for v in body["prediction"])


def test_demand_rows_missing_columns_are_422_naming_them(client: TestClient) -> None:
    response = post(client, "/api/v1/ml/demand", {"features": [{"series_id": "s0"}]})
    assert response.status_code == 422
    assert "missing inputs" in response.json()["detail"]


def test_anomaly_needs_rows_and_a_model(client: TestClient) -> None:
    assert post(client, "/api/v1/ml/anomaly", {"transactions": []}).status_code == 400
    response = post(client, "/api/v1/ml/anomaly", {"transactions": [{"quantity": 3}]})
    assert response.status_code == 404  # no anomaly_detection model in this workspace
    assert "anomaly_detection" in response.json()["detail"]


def test_batch_gives_each_request_its_result_or_error(client: TestClient) -> None:
    response = post(
        client,
        "/api/v1/ml/predict/batch",
        {
            "requests": [
                {"features": {"series_id": "s0"}, "horizon": 2},
                {"features": {"series_id": "nope"}},
                {"model_name": "no_such_model", "features": {"a": 1}},
            ]
        },
    )
    assert response.status_code == 200, response.text
    items = response.json()["predictions"]
    assert [item["status"] for item in items] == [200, 422, 404]
    assert len(items[0]["result"]["prediction"]) == 2
    assert "nope" in items[1]["error"]


def test_segment_by_customer_id_reads_the_online_store(client: TestClient) -> None:
    # No feature set is materialised in this workspace: a clear 404, not a 500.
    response = post(client, "/api/v1/ml/segment", {"customer_id": 10001})
    assert response.status_code in (404, 409), response.text
    assert "customer_features" in response.json()["detail"]


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [{"features": {}}, {"features": []}, {"horizon": 7}],
    ids=["empty-mapping", "empty-list", "no-features"],
)
def test_empty_features_are_400(client: TestClient, body: dict[str, Any]) -> None:
    response = post(client, PREDICT, body)
    assert response.status_code == 400
    assert "Features required" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"features": {"series_id": "s0"}, "horizon": "soon"}, "horizon", "integer"),
        ({"features": {"series_id": "s0"}, "horizon": 0}, "horizon", "greater than"),
        (
            {"features": {"series_id": "s0"}, "confidence_interval": "high"},
            "confidence_interval",
            "number",
        ),
        ({"features": "s0"}, "features", "object"),
        ({"features": {"series_id": "s0"}, "colour": "red"}, "colour", "Extra inputs"),
        ({"features": {"series_id": {"nested": 1}}}, "features", "valid"),
    ],
)
def test_invalid_types_are_422_with_field_and_reason(
    client: TestClient, body: dict[str, Any], field: str, reason: str
) -> None:
    response = post(client, PREDICT, body)
    assert response.status_code == 422
    payload = response.json()
    assert any(
        p["field"].startswith(field) and reason.lower() in p["reason"].lower()
        for p in payload["detail"]
    ), payload
    assert payload["error"].startswith("invalid request: ")


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        PREDICT, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422


def test_an_unknown_series_is_422_listing_the_series(client: TestClient) -> None:
    response = post(client, PREDICT, {"features": {"series_id": "atlantis"}})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "features.series_id" in detail and "s0" in detail and "atlantis" in detail


def test_features_the_model_cannot_use_are_422(client: TestClient) -> None:
    response = post(
        client, PREDICT, {"model_name": "customer_segmentation", "features": {"colour": "red"}}
    )
    assert response.status_code == 422, response.text
    assert "features" in response.json()["detail"]


def test_an_unknown_model_is_404(client: TestClient) -> None:
    response = post(client, PREDICT, {"model_name": "no_such_model", "features": {"a": 1}})
    assert response.status_code == 404
    assert "no_such_model" in response.json()["detail"]
    again = post(client, PREDICT, {"model_name": "no_such_model", "features": {"a": 1}})
    assert again.status_code == 404  # remembered until the next routing reload


def test_an_unknown_version_is_404(client: TestClient) -> None:
    response = post(client, PREDICT, {"features": {"series_id": "s0"}, "model_version": "9.9.9"})
    assert response.status_code == 404
    assert "9.9.9" in response.json()["detail"]


def test_a_model_without_deployment_or_alias_is_404(client: TestClient) -> None:
    response = post(
        client, PREDICT, {"model_name": "sales_forecast_prophet", "features": {"series_id": "s0"}}
    )
    assert response.status_code == 404
    assert "alias" in response.json()["detail"]


def test_a_horizon_out_of_range_is_422(client: TestClient) -> None:
    response = post(client, PREDICT, {"features": {"series_id": "s0"}, "horizon": 5000})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "horizon"


# --- credentials ---------------------------------------------------------------------------


def test_missing_api_key_is_401_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="retailml.serving.auth"):
        response = post(client, PREDICT, {"features": {"series_id": "s0"}}, headers={})
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["detail"]
    assert any("refused POST /api/v1/ml/predict" in r.getMessage() for r in caplog.records)


def test_wrong_api_key_is_403_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="retailml.serving.auth"):
        response = post(
            client, PREDICT, {"features": {"series_id": "s0"}}, headers={"X-API-Key": "guess"}
        )
    assert response.status_code == 403
    assert "invalid API key" in response.json()["detail"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("wrong" in m for m in messages)
    assert not any("guess" in m for m in messages)  # credentials never logged


def test_every_configured_key_works(client: TestClient) -> None:
    response = post(
        client, PREDICT, {"features": {"series_id": "s0"}}, headers={"X-API-Key": "second-key"}
    )
    assert response.status_code == 200


def test_an_api_key_is_not_an_admin_token(client: TestClient) -> None:
    assert client.get("/api/v1/admin/deployments", headers=AUTH).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert client.get("/api/v1/admin/deployments", headers=wrong).status_code == 403
    rollback = client.post(
        "/api/v1/admin/rollback", json={"model_name": "sales_forecast", "reason": "x"}
    )
    assert rollback.status_code == 401


def test_no_configured_keys_refuse_predictions(serving_home: Path) -> None:
    from retailml.serving.app import create_app

    app = create_app(serving_settings(serving_home, api_keys=[], admin_token=None))
    with TestClient(app) as bare:
        response = bare.post(PREDICT, json={"features": {"series_id": "s0"}}, headers=AUTH)
        assert response.status_code == 401
        assert "RETAILML_API_KEYS" in response.json()["detail"]
        admin = bare.get("/api/v1/admin/deployments", headers=ADMIN)
        assert admin.status_code == 401
        assert "RETAILML_ADMIN_TOKEN" in admin.json()["detail"]


def test_probes_need_no_credentials(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert "sales_forecast:1.0.0" in ready.json()["models"]
    assert client.get("/openapi.json").json()["paths"][PREDICT]["post"]
    assert client.get("/docs").status_code == 200


# --- admin ---------------------------------------------------------------------------------


def test_admin_lists_deployments_and_routing(client: TestClient) -> None:
    response = client.get("/api/v1/admin/deployments", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    active = {d["model_name"]: d["version"] for d in body["deployments"] if d["status"] == "active"}
    assert active["sales_forecast"] == "1.0.0"
    assert body["routing"]["active"]["sales_forecast"] == "1.0.0"
    assert client.get("/api/v1/admin/ab-tests", headers=ADMIN).json() == {"ab_tests": []}


def test_admin_rollback_restores_the_previous_version(
    client: TestClient, serving_home: Path
) -> None:
    settings = serving_settings(serving_home)
    deploy(settings, "sales_forecast", "1.1.0")
    refreshed = client.post("/api/v1/admin/routing/refresh", headers=ADMIN)
    assert refreshed.json()["active"]["sales_forecast"] == "1.1.0"
    body = post(client, PREDICT, {"features": {"series_id": "s0"}}).json()
    assert body["model_version"] == "1.1.0"

    response = client.post(
        "/api/v1/admin/rollback",
        json={"model_name": "sales_forecast", "reason": "errors after release"},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["active_version"] == "1.0.0" and result["rolled_back_version"] == "1.1.0"
    body = post(client, PREDICT, {"features": {"series_id": "s0"}}).json()
    assert body["model_version"] == "1.0.0"  # the routing table was reloaded at once


def test_admin_rollback_of_a_model_without_history_is_409(client: TestClient) -> None:
    response = client.post(
        "/api/v1/admin/rollback",
        json={"model_name": "customer_segmentation", "reason": "x"},
        headers=ADMIN,
    )
    assert response.status_code in (404, 409), response.text
    assert "customer_segmentation" in response.json()["detail"]


# --- metrics and the prediction log ---------------------------------------------------------


def test_metrics_count_requests_latency_and_errors_per_version(client: TestClient) -> None:
    post(client, PREDICT, {"features": {"series_id": "s0"}})
    post(client, PREDICT, {"features": {"series_id": "atlantis"}})
    post(client, PREDICT, {"features": {"series_id": "s0"}}, headers={"X-API-Key": "guess"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'retailml_prediction_requests_total{arm="",endpoint="predict",model="sales_forecast",'
        'status="200",version="1.0.0"}' in text
    )
    assert "retailml_prediction_latency_seconds_bucket{" in text
    assert (
        'retailml_prediction_errors_total{arm="",endpoint="predict",model="sales_forecast"' in text
    )
    assert 'retailml_auth_failures_total{kind="api_key",status="403"}' in text
    # The worker's process and interpreter series, as on the default registry.
    resident = next(
        line for line in text.splitlines() if line.startswith("process_resident_memory_bytes ")
    )
    assert float(resident.split()[1]) > 10 * 2**20
    assert "python_info{" in text and "python_gc_collections_total{" in text


def test_predictions_are_logged_in_batches(client: TestClient, serving_home: Path) -> None:
    body = post(client, PREDICT, {"features": {"series_id": "s1"}, "horizon": 2}).json()
    failed = post(client, PREDICT, {"features": {"series_id": "atlantis"}})
    assert failed.status_code == 422
    state = client.app.state.serving  # type: ignore[attr-defined]
    state.log.flush()
    db = PlatformDB.from_settings(serving_settings(serving_home))
    try:
        with db.session() as session:
            row = session.get(PredictionLogEntry, body["request_id"])
            assert row is not None
            assert row.model_name == "sales_forecast" and row.model_version == "1.0.0"
            assert row.status_code == 200 and row.environment == "production"
            assert row.output["prediction"] == body["prediction"]
            assert len(row.features_hash) == 64 and row.latency_ms > 0
            assert row.entity_key == "s1"
            errors = list(
                session.scalars(
                    select(PredictionLogEntry).where(PredictionLogEntry.status_code == 422)
                )
            )
            assert errors and "atlantis" in (errors[-1].error or "")
    finally:
        db.dispose()


def test_credentials_are_checked_before_the_body(client: TestClient) -> None:
    response = client.post(PREDICT, content=b"{not json", headers={"X-API-Key": "guess"})
    assert response.status_code == 403


def test_nested_feature_errors_name_the_feature(client: TestClient) -> None:
    response = post(client, PREDICT, {"features": {"series_id": {"nested": 1}}})
    assert response.status_code == 422
    fields = {p["field"] for p in response.json()["detail"]}
    assert "features.series_id" in fields


def test_serve_is_a_cli_command() -> None:
    from typer.testing import CliRunner

    from retailml.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers", "--environment"):
        assert option in result.output


def test_metrics_expose_model_quality_and_the_dashboard_is_served(
    client: TestClient, serving_home: Path
) -> None:
    from retailml.monitoring.model_monitor import ModelMonitor

    settings = serving_settings(serving_home)
    with ModelMonitor("sales_forecast", "1.0.0", settings=settings) as monitor:
        monitor.track_performance([100.0, 200.0], [110.0, 190.0], metrics=["mape"])
        monitor.send_alert("performance_degradation", "high", "MAPE up")
    client.app.state.serving.metrics.refresh_quality()  # type: ignore[attr-defined]  # cached 15 s
    text = client.get("/metrics").text
    assert 'retailml_model_performance{arm="",metric="mape",model="sales_forecast"' in text
    assert "retailml_alerts_active{" in text
    page = client.get("/dashboard")
    assert page.status_code == 200 and "plotly.min.js" in page.text
    assert client.get("/dashboard/static/plotly.min.js").status_code == 200
