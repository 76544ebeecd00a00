"""ModelTrainer: the guide's training and tracking snippets, every model type, errors, MLflow."""

from __future__ import annotations

import json
import math
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import silhouette_score

import guide
from retailml.core.errors import ConfigError, DataValidationError
from retailml.core.settings import Settings
from retailml.data.generate import GeneratorConfig, generate_transactions
from retailml.training.model_trainer import ModelTrainer, TrainingResult

_SILVER_NAMES = {
    "InvoiceNo": "invoice_no",
    "StockCode": "stock_code",
    "Description": "description",
    "Quantity": "quantity",
    "InvoiceDate": "invoice_date",
    "UnitPrice": "unit_price",
    "CustomerID": "customer_id",
    "Country": "country",
}


def daily_panel(n_series: int = 3, days: int = 420, seed: int = 0) -> pd.DataFrame:
    """Daily sales with a weekly pattern, a trend and noise, one row per series and day."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-02", periods=days, freq="D")
    frames = []
    for i in range(n_series):
        weekly = np.array([1.0, 1.1, 1.2, 1.15, 1.3, 0.4, 0.6])[dates.dayofweek]
        level = 1000 * (i + 1) * (1 + 0.0005 * np.arange(days))
        y = level * weekly * rng.lognormal(0, 0.08, days)
        frames.append(pd.DataFrame({"series_id": f"s{i}", "date": dates, "sales_amount": y}))
    return pd.concat(frames, ignore_index=True)


def customers(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """RFM-like customers in three well-separated groups."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) + 10000,
            "recency": np.array([10, 120, 300])[group] * rng.lognormal(0, 0.2, n),
            "frequency": np.array([30, 5, 1])[group] * rng.lognormal(0, 0.2, n) + 1,
            "monetary": np.array([5000, 600, 50])[group] * rng.lognormal(0, 0.3, n),
        }
    )


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    config = GeneratorConfig(rows=30_000, seed=5, anomaly_rate=0.01)
    frame = generate_transactions(config).to_pandas().rename(columns=_SILVER_NAMES)
    frame["invoice_date"] = pd.to_datetime(frame["invoice_date"], format="mixed")
    return frame


def split_last(panel: pd.DataFrame, periods: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = np.sort(panel["date"].unique())[-periods - 1]
    return panel[panel["date"] <= cut], panel[panel["date"] > cut]


# --- the guide ------------------------------------------------------------------------------


def test_guide_training_configuration_runs_as_written(settings: Settings) -> None:
    code = guide.block("**Training Configuration**:")
    namespace: dict[str, Any] = {"training_features": daily_panel(n_series=1, days=400)}
    guide.run(code, namespace)
    result = namespace["model_result"]
    assert isinstance(result, TrainingResult)
    assert result.algorithm == "prophet"
    assert result.model_name == "sales_forecast_v1.2"
    assert len(result.fold_metrics) == 5
    assert {"mape", "mae", "rmse", "smape", "mase"} <= set(result.metrics)
    assert result.model.get_params()["seasonality_mode"] == "multiplicative"
    assert result.run_id and result.model_uri


def test_guide_experiment_tracking_snippet_runs_with_the_trainer_inside(tracking: str) -> None:
    code = guide.block("**Experiment Tracking**:")
    namespace: dict[str, Any] = {
        "features": daily_panel(n_series=2, days=300),
        "target": "sales_amount",
    }
    guide.run(code, namespace)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("sales_forecasting")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    outer = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    inner = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(outer) == 1 and len(inner) == 1
    assert outer[0].data.params["seasonality_mode"] == "multiplicative"
    assert set(outer[0].data.metrics) >= {"mape", "mae", "rmse"}
    assert inner[0].data.tags["mlflow.parentRunId"] == outer[0].info.run_id
    assert inner[0].data.params["algorithm"] == "auto"
    # The guide's own mlflow.sklearn.log_model stored the fitted forecaster too.
    loaded = mlflow.sklearn.load_model(f"runs:/{outer[0].info.run_id}/model")
    assert set(loaded.predict(horizon=3)["series_id"]) == {"s0", "s1"}


# --- every model type -------------------------------------------------------------------------


def test_forecast_beats_seasonal_naive_on_held_out_data(settings: Settings) -> None:
    train, test = split_last(daily_panel(), 28)
    scores = {}
    for algorithm in ("auto", "seasonal_naive"):
        trainer = ModelTrainer(
            model_type="sales_forecast",
            algorithm=algorithm,
            hyperparameters={"horizon": 28},
            validation_strategy="holdout",
        )
        result = trainer.train_sync(train, target="sales_amount", model_name=f"fc_{algorithm}")
        scores[algorithm] = result.task().score(result.model, test, train)["smape"]
    assert scores["auto"] < scores["seasonal_naive"]


def test_segmentation_beats_random_assignment(settings: Settings) -> None:
    data = customers()
    result = ModelTrainer(
        model_type="customer_segmentation", hyperparameters={"n_clusters": 3}
    ).train_sync(data)
    assert len(result.fold_metrics) == 5
    points = result.model.transform(data)
    random_labels = np.random.default_rng(12345).integers(0, 3, len(data))
    assert result.metrics["silhouette_score"] > silhouette_score(points, random_labels) + 0.3
    assert result.model.profiles_["label"].str.len().gt(0).all()


def test_anomaly_detection_beats_random_scores(settings: Settings, lines: pd.DataFrame) -> None:
    result = ModelTrainer(
        model_type="anomaly_detection", validation_strategy="kfold", n_splits=3
    ).train_sync(lines)
    rate = float(lines["is_anomaly"].mean())
    random_f1 = 2 * rate * rate / (rate + rate)  # flagging at random at the true rate
    assert result.metrics["f1"] > random_f1 + 0.3
    assert result.hyperparameters["features"] is not None  # value features, from raw lines
    assert "is_anomaly" not in list(result.model.feature_names_in_)


def test_demand_prediction_beats_the_training_mean(settings: Settings) -> None:
    panel = daily_panel(n_series=3, days=300).rename(columns={"sales_amount": "quantity"})
    result = ModelTrainer(
        model_type="demand_prediction",
        hyperparameters={"n_estimators": 60},
        n_splits=3,
    ).train_sync(panel, target="quantity")
    assert "quantity_lag_7" in result.model.feature_names_in_
    task = result.task()
    data = task.prepare(panel)
    train, test = data[data["date"] < "2023-09-01"], data[data["date"] >= "2023-09-01"]
    model = task.fit(ModelTrainer("demand_prediction")._estimator({"n_estimators": 60}), train)
    actual = test["quantity"].to_numpy()
    mean_mae = float(np.mean(np.abs(actual - train["quantity"].mean())))
    assert task.score(model, test)["mae"] < 0.5 * mean_mae


def test_result_unpacks_as_model_and_metrics(settings: Settings) -> None:
    result = ModelTrainer(model_type="customer_segmentation", n_splits=2).train_sync(customers(200))
    model, metrics = result
    assert model is result.model and metrics is result.metrics


# --- defaults and errors ------------------------------------------------------------------------


def test_model_type_alone_picks_a_default_algorithm(settings: Settings) -> None:
    assert ModelTrainer(model_type="sales_forecast").algorithm == "auto"
    assert ModelTrainer(model_type="customer_segmentation").algorithm == "kmeans"
    assert ModelTrainer(model_type="anomaly_detection").algorithm == "isolation_forest"
    assert ModelTrainer(model_type="demand_prediction").algorithm == "random_forest"


def test_unknown_model_type_algorithm_and_hyperparameter_list_the_valid_ones(
    settings: Settings,
) -> None:
    with pytest.raises(ConfigError, match=r"'sales_forecast'.*'demand_prediction'"):
        ModelTrainer(model_type="churn")
    with pytest.raises(ConfigError, match="'kmeans', 'dbscan', 'hierarchical'"):
        ModelTrainer(model_type="customer_segmentation", algorithm="gmm")
    with pytest.raises(ConfigError, match=r"unknown 'n_cluster'.*'n_cluster' -> 'n_clusters'"):
        ModelTrainer(model_type="customer_segmentation", hyperparameters={"n_cluster": 4})
    with pytest.raises(ConfigError, match="time_series_split"):
        ModelTrainer(model_type="sales_forecast", validation_strategy="kfold")
    with pytest.raises(ConfigError, match="unknown \\['trials'\\]"):
        ModelTrainer(model_type="customer_segmentation", tuning={"trials": 3})
    with pytest.raises(ConfigError, match="search_space"):
        ModelTrainer(model_type="sales_forecast", algorithm="auto", tuning={"n_trials": 2})


def test_missing_columns_say_what_is_expected(settings: Settings) -> None:
    trainer = ModelTrainer(model_type="sales_forecast")
    with pytest.raises(DataValidationError, match="'date', 'revenue'"):
        trainer.train_sync(pd.DataFrame({"day": [1], "revenue": [2.0]}), target="revenue")
    with pytest.raises(DataValidationError, match="empty"):
        trainer.train_sync(pd.DataFrame())


# --- tracking ------------------------------------------------------------------------------------


def test_run_is_readable_through_mlflow_and_the_model_loads_as_pyfunc(settings: Settings) -> None:
    panel = daily_panel(n_series=2, days=200)
    result = ModelTrainer(
        model_type="sales_forecast",
        algorithm="theta",
        hyperparameters={"horizon": 7},
        n_splits=3,
    ).train_sync(
        panel,
        target="sales_amount",
        model_name="tracked",
        data_version="dv-123",
        feature_set_versions={"daily_sales": "fs-abc"},
    )
    assert mlflow.get_tracking_uri().endswith("workspace/mlflow.db")
    run = MlflowClient().get_run(result.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["algorithm"] == "theta" and params["hp.horizon"] == "7"
    assert params["seed"] == "42" and params["n_splits"] == "3"
    assert math.isclose(metrics["smape"], result.metrics["smape"])
    history = MlflowClient().get_metric_history(result.run_id, "fold_smape")
    assert [m.step for m in history] == [0, 1, 2]
    assert tags["retailml.data_version"] == "dv-123"
    assert json.loads(tags["retailml.feature_sets"]) == {"daily_sales": "fs-abc"}
    assert tags["retailml.version.mlflow"] == mlflow.__version__
    assert "retailml.version.python" in tags
    loaded = mlflow.pyfunc.load_model(result.model_uri)
    assert loaded.metadata.signature is not None
    forecast = loaded.predict(pd.DataFrame({"series_id": ["s1"], "horizon": [5]}))
    assert list(forecast.columns) == ["series_id", "date", "prediction", "lower", "upper"]
    assert len(forecast) == 5 and set(forecast["series_id"]) == {"s1"}
    pd.testing.assert_frame_equal(
        forecast.reset_index(drop=True),
        result.model.predict(horizon=5).query("series_id == 's1'").reset_index(drop=True),
    )


def test_segmentation_pyfunc_predicts_segments(settings: Settings) -> None:
    data = customers(300)
    result = ModelTrainer(model_type="customer_segmentation", n_splits=2).train_sync(data)
    out = mlflow.pyfunc.load_model(result.model_uri).predict(data.head(10))
    assert list(out.columns) == ["segment", "segment_name"]
    np.testing.assert_array_equal(out["segment"], result.model.predict(data.head(10)))


def test_tracking_uri_setting_is_honoured(
    settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retailml.training._tracking import tracking_uri

    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert tracking_uri(settings.model_copy(update={"mlflow_tracking_uri": other})) == other
    assert tracking_uri(settings).startswith("sqlite:///") and tracking_uri(settings).endswith(
        "mlflow.db"
    )
