"""The ``retailml`` application: commands, help and error handling."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from retailml import __version__
from retailml.cli._console import err, out
from retailml.cli.data import data_app, generate_file, ingest_path, print_ingest_result
from retailml.cli.deploy import ab_app, deploy, promote, register, rollback
from retailml.cli.diagnose import diagnose_app
from retailml.cli.diagnose import recover as recover_command
from retailml.cli.features import (
    BUILTIN_CONFIG,
    build_features,
    features_app,
    materialize_features,
    print_build,
    stream_once,
)
from retailml.cli.governance import audit_app, config_set, governance_app
from retailml.cli.lineage import lineage_app
from retailml.cli.maintenance import maintenance_app
from retailml.cli.monitor import monitor_app
from retailml.cli.report import report as report_command
from retailml.cli.reproduce import reproduce as reproduce_command
from retailml.cli.retrain import jobs_app
from retailml.cli.retrain import retrain as retrain_command
from retailml.cli.retrain import scheduler as scheduler_command
from retailml.cli.serve import serve as serve_command
from retailml.cli.train import train as train_command
from retailml.cli.train import validate as validate_command
from retailml.core.errors import RetailMLError
from retailml.core.logs import configure_logging
from retailml.core.settings import Settings, get_settings, load_settings
from retailml.core.workspace import Workspace

app = typer.Typer(
    name="retailml",
    help=(
        "retailml: an MLOps platform for retail sales data.\n\n"
        "Example: retailml demo   (generate sample data, ingest it, print the quality report)"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(lineage_app, name="lineage")
app.add_typer(governance_app, name="governance")
app.add_typer(audit_app, name="audit")
app.command(name="train")(train_command)
app.command(name="validate")(validate_command)
app.add_typer(diagnose_app, name="diagnose")
app.command(name="recover")(recover_command)
app.command(name="register")(register)
app.command(name="deploy")(deploy)
app.command(name="promote")(promote)
app.command(name="rollback")(rollback)
app.add_typer(ab_app, name="ab")
app.command(name="serve")(serve_command)
app.add_typer(monitor_app, name="monitor")
app.command(name="report")(report_command)
app.command(name="retrain")(retrain_command)
app.command(name="scheduler")(scheduler_command)
app.add_typer(jobs_app, name="jobs")
app.add_typer(maintenance_app, name="maintenance")
app.command(name="reproduce")(reproduce_command)


def _version(value: bool) -> None:
    if value:
        out.print(f"retailml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """retailml: an MLOps platform for retail sales data."""


@app.command()
def init() -> None:
    """Create the workspace (RETAILML_HOME, default ./workspace) and its platform database.

    Example: RETAILML_HOME=/data/retail retailml init
    """
    from retailml.core.db import PlatformDB

    settings = get_settings()
    workspace = Workspace.from_settings(settings)
    created = workspace.init()
    PlatformDB.from_settings(settings).dispose()
    out.print(f"workspace: {workspace.root}")
    for path in created:
        out.print(f"  created {path.relative_to(workspace.root)}/")
    if not created:
        out.print("  already initialised")


config_app = typer.Typer(help="Inspect and change settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show() -> None:
    """Print every setting: its environment variable, value and meaning.

    Example: RETAILML_LOG_LEVEL=DEBUG retailml config show
    """
    settings = get_settings()
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        out.print(f"RETAILML_{name.upper()}={'' if value is None else value}")
        out.print(f"    {field.description}")


config_app.command("set")(config_set)


@app.command()
def demo(
    rows: Annotated[
        int, typer.Option(min=1, help="Rows of synthetic transactions to generate.")
    ] = 200_000,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: RETAILML_SEED).")] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve",
            help="End by starting the prediction service (--no-serve: stop after the rollout).",
        ),
    ] = True,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the service.")] = 8000,
) -> None:
    """Run the whole lifecycle that exists on the embedded defaults.

    Today: generate realistic UCI-style transactions -> ingest them into
    bronze, silver and quarantine -> build and validate every feature set
    -> register them in the Feast feature store and load the online store
    -> stream a few transaction events into the real-time features
    -> train, cross-validate, validate and track (MLflow) one model of each type
    -> register the models, deploy the forecast to staging and (approved by the
    demo approvers) production, roll a challenger out by canary on simulated
    traffic (promoted when healthy)
    -> monitor the production forecast against actuals and detect a drifted
    period (prices +30 %, a new country), which raises an alert
    -> close the loop: the drifted period arrives as new data and its drift
    report triggers a retrain; the challenger is compared with the champion on
    the same holdout and, only when better, approved and rolled out by canary;
    lineage and the audit log tell the story
    -> print where every output is, then serve predictions and the dashboard
    (--no-serve stops before serving).

    Example: retailml demo --rows 50000
    """
    settings = get_settings()
    workspace = Workspace.from_settings(settings)
    workspace.init()
    landing = workspace.landing / "online_retail_demo.csv"
    out.print("[bold]1/8 generate[/bold] synthetic UCI Online Retail transactions")
    generate_file(
        rows=rows,
        seed=settings.seed if seed is None else seed,
        output=landing,
        anomaly_rate=0.01,  # labelled anomalies, so the detector's F1 can be measured
    )
    out.print(f"    wrote {rows:,} rows to {landing}")
    out.print("[bold]2/8 ingest[/bold] into bronze, silver and quarantine")
    result = ingest_path(landing, mapping=None, date_format=None, settings=settings)
    print_ingest_result(result)
    out.print("[bold]3/8 features[/bold]: compute, validate and publish every feature set")
    features = build_features(dict(BUILTIN_CONFIG), settings=settings)
    print_build(features, root=workspace.root)
    out.print("[bold]4/8 feature store[/bold]: register in Feast and load the online store")
    loaded = materialize_features(settings)
    for name, (source, version, count) in loaded.items():
        out.print(f"    {name:<18} <- {source} {version}: {count:,} entities online")
    rfm = features["customer_rfm"].table("pandas")
    best = str(rfm.sort_values("monetary_total", ascending=False)["customer_id"].iloc[0])
    out.print(f"    online lookup of the top customer: {_online_lookup(settings, best)}")
    out.print(f"    $ retailml features get --set customer_features --entity {best}")
    events = _demo_events(
        best,
        features["product_popularity"].table("pandas"),
        seed=settings.seed if seed is None else seed,
    )
    published, streamed, where = stream_once(settings, events)
    out.print(
        f"    real-time: published {published} events to {where}, "
        f"applied {streamed.processed} in {streamed.batches} batch(es)"
    )
    realtime = _online_lookup(settings, best, "customer_realtime")
    out.print(f"    real-time features of the top customer: {realtime}")
    out.print(f"    $ retailml features get --set customer_realtime --entity {best}")
    out.print("[bold]5/8 models[/bold]: train, validate and track one model of each type")
    trained = _demo_models(settings)
    out.print("[bold]6/8 deploy[/bold]: register, stage, and roll out to production by canary")
    api_key = _demo_deploy(settings, trained)
    out.print("[bold]7/8 monitor[/bold]: production accuracy against actuals, and a drifted period")
    arrivals = _demo_monitor(settings, trained, seed=settings.seed if seed is None else seed)
    out.print(
        "[bold]8/8 closing the loop[/bold]: the drift triggers a retrain; the challenger "
        "is validated, approved and rolled out by canary"
    )
    _demo_loop(settings, arrivals, api_key)
    out.print()
    out.print("[bold]Open these:[/bold]")
    out.print(f"  silver table:    {result.silver_path}")
    quarantined = result.report.quarantined_rows
    out.print(
        f"  quarantine:      {result.quarantine_path or workspace.quarantine}"
        f"   ({quarantined:,} rows)"
    )
    out.print(f"  quality report:  {result.report_path}")
    out.print(f"  feature sets:    {workspace.features}")
    out.print(f"  models:          {trained}")
    out.print(f"  lineage events:  {workspace.lineage / 'events.jsonl'}")
    out.print(
        "  lineage:         retailml lineage show --model sales_forecast  |  "
        "retailml lineage show silver.transactions --downstream"
    )
    out.print("  retrain jobs:    retailml jobs --model sales_forecast")
    out.print("  audit log:       retailml audit show  |  retailml audit verify")
    out.print(
        f"  MLflow runs:     mlflow ui --backend-store-uri sqlite:///{workspace.root.resolve()}"
        "/mlflow.db  (then http://127.0.0.1:5000)"
    )
    url = f"http://127.0.0.1:{port}"
    out.print(f"  dashboard:       {url}/dashboard   (API docs: {url}/docs)")
    out.print(
        f"  predict:         curl -s -H 'X-API-Key: {api_key}' -d "
        f'\'{{"features": {{"series_id": "total"}}, "horizon": 7}}\' '
        f"{url}/api/v1/ml/predict"
    )
    if serve:
        _demo_serve(port, api_key)


#: The demo's models: one per type, sized to train in seconds on the demo data.
DEMO_MODELS: tuple[dict[str, Any], ...] = (
    {
        "model_type": "sales_forecast",
        "algorithm": "auto",
        "model_name": "sales_forecast",
        "target": "sales_amount",
        "hyperparameters": {"horizon": 14},
        "n_splits": 2,
        "data": {
            "name": "daily_sales",
            "filter": {"level": ["total", "country"]},
            "top_series": 4,
            "holdout": 14,
        },
        "validation": {"performance_thresholds": {"mase": 2.0}, "drift_detection": True},
    },
    {
        "model_type": "customer_segmentation",
        "algorithm": "kmeans",
        "model_name": "customer_segmentation",
        "hyperparameters": {"n_clusters": 4, "features": ["recency", "frequency", "monetary"]},
        "n_splits": 3,
        "data": {"name": "customer_rfm", "holdout": 0.2},
        "validation": {"performance_thresholds": {"silhouette_score": 0.2}},
    },
    {
        "model_type": "anomaly_detection",
        "algorithm": "isolation_forest",
        "model_name": "anomaly_detection",
        "target": "is_anomaly",
        "hyperparameters": {"contamination": 0.01},
        "n_splits": 3,
        "data": {"source": "silver", "window": "6m", "holdout": 0.2},
        "validation": {"performance_thresholds": {"f1": 0.3}, "drift_detection": True},
    },
    {
        "model_type": "demand_prediction",
        "algorithm": "random_forest",
        "model_name": "demand_prediction",
        "target": "quantity",
        "hyperparameters": {"n_estimators": 50},
        "n_splits": 2,
        "data": {
            "name": "daily_sales",
            "filter": {"level": "product"},
            "top_series": 20,
            "window": "1y",
            "holdout": 14,
        },
        "validation": {"performance_thresholds": {"mae": 1000.0}, "drift_detection": True},
    },
)


def _demo_models(settings: Settings) -> Any:
    """Train and validate :data:`DEMO_MODELS`; returns the models directory."""
    import math

    from retailml.cli.train import default_output_dir, train_from_config
    from retailml.training.model_trainer import ModelValidator

    output = default_output_dir(settings)
    for config in DEMO_MODELS:
        result, directory = train_from_config(config, output_dir=output, settings=settings)
        test = directory / "test.parquet"
        status = "no test data"
        if test.exists():
            import pandas as pd

            outcome = ModelValidator().validate_model(
                model=result,
                test_data=pd.read_parquet(test),
                validation_config=dict(config["validation"]),
            )
            failed = ", ".join(check.name for check in outcome.failures)
            status = f"validation {outcome.status}" + (f" ({failed})" if failed else "")
        shown = ", ".join(
            f"{name} {value:.3g}"
            for name, value in list(result.metrics.items())[:3]
            if math.isfinite(value)
        )
        out.print(f"    {result.model_name:<22} {result.algorithm:<17} {shown}; {status}")
    out.print(f"    $ retailml validate --model-path {output / 'latest'}")
    return output


def _demo_deploy(settings: Settings, models_dir: Any) -> str:
    """Register the demo forecast as 1.0.0 and a theta challenger as 1.1.0 (and the other
    demo models as 1.0.0), deploy 1.0.0 to staging, have the demo approvers approve both
    forecasts for production, deploy 1.0.0 there and roll 1.1.0 out by canary on
    simulated traffic.

    Returns:
        The API key the demo service accepts (RETAILML_API_KEYS' first, else a new one).
    """
    import asyncio
    import secrets

    from pydantic import SecretStr

    from retailml.cli.train import train_from_config
    from retailml.deployment.model_server import ModelRegistry, ModelServer
    from retailml.training.model_trainer import TrainingResult

    name = "sales_forecast"
    champion = TrainingResult.load(models_dir / name)
    challenger_config = {**DEMO_MODELS[0], "algorithm": "theta", "model_name": f"{name}_theta"}
    challenger, _ = train_from_config(challenger_config, output_dir=models_dir, settings=settings)
    with ModelRegistry(settings) as registry:
        known = (
            {v.version for v in registry.get_model_versions(name, limit=100)}
            if any(m.name == name for m in registry.list_models())
            else set()
        )
        for version, result in (("1.0.0", champion), ("1.1.0", challenger)):
            if version not in known:
                registry.register_model(
                    name, version, result, metadata={"source": "retailml demo"}, tags=["demo"]
                )
        out.print(f"    registered {name} 1.0.0 (auto) and 1.1.0 (theta challenger)")
        # The other models are registered too (not deployed): lineage shows every model.
        others = [str(config["model_name"]) for config in DEMO_MODELS[1:]]
        models = {m.name for m in registry.list_models()}
        for other in others:
            if other not in models:
                registry.register_model(
                    other,
                    "1.0.0",
                    TrainingResult.load(models_dir / other),
                    metadata={"source": "retailml demo"},
                    tags=["demo"],
                )
        out.print(f"    registered {', '.join(others)} 1.0.0 (not deployed)")
    api_key = settings.api_keys[0].get_secret_value() if settings.api_keys else secrets.token_hex(8)
    served = settings.model_copy(update={"api_keys": [SecretStr(api_key)]})
    with ModelServer("staging", settings) as staging:
        deployed = staging.deploy_model_sync({"model_name": name, "model_version": "1.0.0"})
        out.print(f"    staging:    {name} {deployed.version} {deployed.status}")
    _demo_approve(settings, name, ("1.0.0", "1.1.0"))
    with ModelServer("production", served) as production:
        active = production.active_deployment(name)
        if active is None:
            asyncio.run(production.promote(name, "1.0.0"))
            out.print(f"    production: {name} 1.0.0 active (first version, direct)")
            active = production.active_deployment(name)
        if active is not None and active.version != "1.1.0":
            rollout = production.blue_green_deploy_sync(
                name,
                "1.1.0",
                active.version,
                DEMO_CANARY_SPLIT,
                DEMO_CANARY_THRESHOLD,
                strategy="canary",
            )
            out.print(f"    canary:     1.1.0 takes 20 % of production traffic ({rollout.id[:8]})")
            _demo_canary(production, served, api_key, rollout.id)
    return api_key


#: The demo's canary: 20 % of the traffic, judged over 2 s windows of at least 20 requests.
DEMO_CANARY_SPLIT = {"blue": 80, "green": 20}
DEMO_CANARY_THRESHOLD = {"window_seconds": 2, "min_requests": 20}


def _demo_canary(production: Any, served: Settings, api_key: str, rollout_id: str) -> Any:
    """Send simulated traffic through the production service until the canary is decided.

    Args:
        production: The production ModelServer.
        served: Settings whose API keys include ``api_key``.
        api_key: The key the simulated clients send.
        rollout_id: The running canary rollout.

    Returns:
        The decided (promoted or rolled back) rollout; printed.
    """
    import asyncio

    from fastapi.testclient import TestClient

    from retailml.serving.app import create_app

    with TestClient(create_app(served, environment="production")) as client:
        for i in range(300):  # simulated traffic, in process
            client.post(
                "/api/v1/ml/predict",
                headers={"X-API-Key": api_key},
                json={"features": {"series_id": "total"}, "entity_id": f"demo-{i}"},
            )
        client.app.state.serving.log.flush()  # type: ignore[attr-defined]
    decided = asyncio.run(production.watch_rollout(rollout_id, 1.0, 30.0))
    out.print(f"    canary:     {decided.state} ({decided.reason or 'healthy'})")
    return decided


#: The demo's approvers: (role, name, comment). Production needs every role's approval.
DEMO_APPROVERS = (
    ("lead_data_scientist", "dana (demo)", "backtest MAPE within target; residuals look fine"),
    ("ml_engineer", "eli (demo)", "health checks and rollback thresholds in place"),
    ("business_owner", "fay (demo)", "forecast feeds replenishment; go ahead"),
)


def _demo_approve(settings: Settings, name: str, versions: tuple[str, ...]) -> None:
    """Have the demo approvers approve each version for production: the open request
    for it (e.g. the retraining pipeline's), else a new one."""
    from retailml.governance.model_governance import ModelGovernance

    governance = ModelGovernance(settings)
    roles = [role for role, _, _ in DEMO_APPROVERS]
    for version in versions:
        if governance.is_approved(name, version, "production"):
            continue
        pending = [
            r
            for r in governance.list_requests(name)
            if r.model_version == version
            and r.deployment_target == "production"
            and r.status == "pending"
            and set(r.pending) <= set(roles)
        ]
        if pending:
            request = pending[0]
        else:
            request = governance.request_approval(
                name,
                version,
                "production",
                "retailml demo: backtested on the generated history",
                {"business_impact": "low", "technical_risk": "low"},
                roles,
                requested_by="retailml demo",
            )
        deciders = [d for d in DEMO_APPROVERS if d[0] in request.pending]
        for role, approver, comment in deciders:
            request = governance.approve(request.id, approver, role, comment)
        out.print(
            f"    approval:   {name} {version} for production {request.status} by "
            + ", ".join(f"{approver} ({role})" for role, approver, _ in deciders)
        )
    governance.db.dispose()
    out.print("    $ retailml governance status --model " + name)


def _demo_monitor(settings: Settings, models_dir: Any, *, seed: int) -> Any:
    """A few days of the production forecast's accuracy against actuals, then a drifted
    period (the generator's drift option) compared with the training data: the drift is
    detected and raises an alert.

    Returns:
        The drifted period's transactions (a pyarrow table in the UCI layout) at the
        history's daily volume: the new data :func:`_demo_loop` ingests. (The drift
        check compares a larger sample of the same period.)
    """
    import datetime as dt

    import numpy as np
    import pandas as pd

    from retailml.data.generate import DriftSpec, GeneratorConfig, generate_transactions
    from retailml.data.ingest import read_silver
    from retailml.deployment.model_server import ModelServer
    from retailml.monitoring.model_monitor import ModelMonitor
    from retailml.training.model_trainer import TrainingResult

    name = "sales_forecast"
    with ModelServer("production", settings) as production:
        active = production.active_deployment(name)
    version = active.version if active is not None else "1.0.0"
    result = TrainingResult.load(models_dir / name)
    test = pd.read_parquet(models_dir / name / "test.parquet")
    days = sorted(test["date"].unique())
    forecast = result.model.predict(horizon=len(days) + 7)
    # The total series: the one a store manager reads (country series are sparse).
    joined = forecast.merge(test, on=["series_id", "date"]).query("series_id == 'total'")
    with ModelMonitor(model_name=name, model_version=version, settings=settings) as monitor:
        chunks = [
            days[i : i + max(1, len(days) // 3)]
            for i in range(0, len(days), max(1, len(days) // 3))
        ]
        for chunk in chunks[:3]:
            part = joined[joined["date"].isin(chunk)]
            if part.empty:
                continue
            metrics = monitor.track_performance(
                part["prediction"].to_numpy(),
                part["sales_amount"].to_numpy(),
                metrics=["mape", "mae", "rmse"],
                timestamp=pd.Timestamp(chunk[-1]).to_pydatetime().replace(tzinfo=dt.UTC),
            )
            first, last = pd.Timestamp(chunk[0]).date(), pd.Timestamp(chunk[-1]).date()
            out.print(
                f"    monitor:    {first}..{last} "
                f"MAPE {metrics['mape']:.1%}, MAE {metrics['mae']:,.0f}"
            )
        silver = read_silver(settings).to_pandas()
        columns = ["quantity", "unit_price", "country"]
        purchases = silver[~silver["is_cancellation"]][columns]
        reference = purchases.sample(min(20_000, len(purchases)), random_state=seed)
        start = dt.date(2024, 1, 1)
        drifted_table = generate_transactions(
            GeneratorConfig(
                rows=20_000,
                seed=seed + 1,
                start=start,
                end=dt.date(2024, 1, 31),
                drift=DriftSpec(start=start, price_shift=0.3, new_country="Brazil"),
            )
        )
        drifted = drifted_table.to_pandas()
        current = pd.DataFrame(
            {
                "quantity": pd.to_numeric(drifted["Quantity"], errors="coerce"),
                "unit_price": pd.to_numeric(drifted["UnitPrice"], errors="coerce"),
                "country": drifted["Country"].astype(str),
            }
        )
        current = current[current["quantity"] > 0].dropna()
        report = monitor.detect_data_drift(reference, current)
        drifted_columns = ", ".join(report.drifted_columns) or "none"
        out.print(
            f"    drift:      January 2024 (prices +30 %, a new country) vs training: "
            f"{report.n_drifted}/{report.n_columns} columns drifted ({drifted_columns})"
        )
        if report.drifted_columns:
            monitor.send_alert(
                alert_type="data_drift",
                severity="high",
                message=f"Data drift in {drifted_columns} ({report.share_drifted:.0%} of columns)",
            )
            out.print("    alert:      data_drift raised ($ retailml monitor alerts --state open)")
    # The period as it arrives: as many rows a day as the history before it had (so a
    # second demo run writes the same file, which ingestion recognises).
    dates = pd.to_datetime(silver["invoice_date"])
    dates = dates[dates < pd.Timestamp(start)]
    days_seen = max(1, (dates.max() - dates.min()).days + 1) if len(dates) else 1
    arriving = max(1, min(drifted_table.num_rows, round(len(dates) / days_seen * 31)))
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(drifted_table.num_rows, size=arriving, replace=False))
    return drifted_table.take(picked)


#: The loop's trigger (the guide's value): retrain when more than 5 % of the columns drifted.
DEMO_DRIFT_THRESHOLD = 0.05


def _demo_loop(settings: Settings, arrivals: Any, api_key: str) -> None:
    """Close the loop on the production forecast.

    The drifted period arrives as new data (ingested into silver); the drift report
    the monitoring step recorded fires the retrain trigger; a challenger is trained
    on the current data with the champion's configuration (a ``retrain`` job) and
    compared with the production champion on the same holdout. The governed
    deployment path decides: a challenger that is not better is refused and never
    leaves the registry; a better one is registered, waits for approval, is
    approved by the demo approvers and rolled out by canary on simulated traffic.
    Ends with what lineage and the audit log say.

    Args:
        settings: retailml settings.
        arrivals: The drifted period's transactions (see :func:`_demo_monitor`).
        api_key: The key the simulated production traffic sends.
    """
    import asyncio

    from pydantic import SecretStr

    from retailml.data.generate import write_transactions
    from retailml.data.ingest import ingest_file
    from retailml.deployment.model_server import ModelServer
    from retailml.governance.model_governance import ModelGovernance
    from retailml.training.model_trainer import AutoRetrainingPipeline

    name = "sales_forecast"
    workspace = Workspace.from_settings(settings)
    governance = ModelGovernance(settings)
    latest = governance.audit_log(limit=1)
    audited_before = latest[0]["seq"] if latest else 0
    landing = write_transactions(arrivals, workspace.landing / "online_retail_2024_01.parquet")
    arrived = ingest_file(landing, settings=settings)
    out.print(
        f"    new data:   January 2024 arrives: {arrived.report.silver_rows:,} rows into silver"
        + (" (already ingested)" if arrived.status == "already_ingested" else "")
    )
    with AutoRetrainingPipeline(
        model_name=name,
        triggers={"data_drift_threshold": DEMO_DRIFT_THRESHOLD},
        approvers=[role for role, _, _ in DEMO_APPROVERS],
        traffic_split=DEMO_CANARY_SPLIT,
        rollback_threshold=DEMO_CANARY_THRESHOLD,
        settings=settings,
    ) as pipeline:
        decision = asyncio.run(pipeline.check_retrain_conditions())
        out.print(
            f"    trigger:    {'fired' if decision.should_retrain else 'quiet'}: {decision.reason}"
        )
        if decision.should_retrain:
            _demo_retrain(pipeline, settings.model_copy(update={"api_keys": [SecretStr(api_key)]}))
    with ModelServer("production", settings) as production:
        active = production.active_deployment(name)
    if active is not None:
        _demo_lineage(settings, name, active.version)
    entries = governance.audit_log(limit=1000)
    verdict = governance.verify_audit()
    governance.db.dispose()
    added = [e["action"] for e in reversed(entries) if e["seq"] > audited_before]
    counted = ", ".join(f"{action} x{added.count(action)}" for action in dict.fromkeys(added))
    out.print(f"    audit:      {verdict}; this loop added {len(added)}: {counted or 'none'}")
    out.print("    $ retailml audit show   $ retailml audit verify")


def _demo_retrain(pipeline: Any, served: Settings) -> None:
    """Retrain, validate against the champion, and deploy through governance (the loop)."""
    import asyncio

    from retailml.deployment.model_server import ModelServer

    name = pipeline.model_name
    model = asyncio.run(pipeline.retrain(data_source="production"))
    if not model.trained:
        out.print(f"    retrain:    job {model.job_id[:8]} {model.status}: {model.reason}")
        return
    result = model.result
    out.print(
        f"    retrain:    job {model.job_id[:8]} ({model.reason}) trained {result.algorithm} "
        f"on {result.n_rows:,} rows of the current data"
    )
    out.print(f"    $ retailml jobs show {model.job_id}")
    comparison = asyncio.run(pipeline.validate_new_model(model, "production", model.test_data))
    out.print(
        f"    validate:   challenger vs champion ({comparison.baseline}) on the same "
        f"{comparison.n_rows}-day holdout:"
    )
    for metric, delta in comparison.deltas.items():
        decided = "  (decides)" if metric in comparison.decided_on else ""
        out.print(
            f"                {metric:<6} {comparison.metrics_new[metric]:>10.4g} vs "
            f"{comparison.metrics_baseline[metric]:>10.4g}  delta {delta:+.4g}{decided}"
        )
    out.print(f"    is_better:  {comparison.is_better} ({comparison.reason})")
    outcome = asyncio.run(pipeline.deploy_new_model(model, deployment_strategy="canary"))
    if outcome.status == "refused":
        out.print(
            "    deploy:     refused: the challenger stays out of production "
            "(a challenger that is not better is never deployed)"
        )
        return
    if outcome.status == "awaiting_approval":
        out.print(
            f"    deploy:     {name} {outcome.version} registered; awaiting approval by "
            f"{', '.join(outcome.pending_approvers)}"
        )
        _demo_approve(pipeline.settings, name, (str(outcome.version),))
        outcome = asyncio.run(pipeline.deploy_new_model(model, deployment_strategy="canary"))
    if outcome.status == "rollout_started" and outcome.rollout_id is not None:
        out.print(
            f"    canary:     {outcome.version} takes 20 % of production traffic "
            f"({outcome.rollout_id[:8]})"
        )
        with ModelServer("production", served) as production:
            key = served.api_keys[0].get_secret_value()
            _demo_canary(production, served, key, outcome.rollout_id)
    else:
        out.print(f"    deploy:     {outcome.status}: {outcome.reason}")


def _demo_lineage(settings: Settings, name: str, version: str) -> None:
    """Print both directions of lineage for the production model version."""
    from retailml.lineage.lineage_tracker import LineageTracker

    tracker = LineageTracker(settings)
    upstream = tracker.upstream(f"model.{name}", version)
    groups: dict[str, list[str]] = {}
    for dataset in upstream.datasets:
        kind = dataset.split(".", 1)[0]
        shown = f"run {dataset[4:12]}" if kind == "run" else dataset
        groups.setdefault(kind, []).append(shown)
    order = ("run", "model", "feature_set", "silver", "bronze", "file")
    chain = [", ".join(groups.pop(kind)) for kind in order if kind in groups]
    chain += [", ".join(rest) for rest in groups.values()]
    out.print(f"    lineage:    {name} {version} (production) <- {' <- '.join(chain)}")
    out.print(f"    $ retailml lineage show --model {name} --version {version}")
    downstream = tracker.downstream("silver.transactions")
    sets = [d.removeprefix("feature_set.") for d in downstream.feature_sets]
    models = [d.removeprefix("model.") for d in downstream.models]
    out.print(
        f"    lineage:    silver.transactions feeds {len(sets)} feature sets ({', '.join(sets)}) "
        f"and {len(models)} models ({', '.join(models)})"
    )
    out.print("    $ retailml lineage show silver.transactions --downstream")


def _demo_serve(port: int, api_key: str) -> None:
    """Serve predictions and the dashboard until interrupted (Ctrl-C)."""
    import os

    import uvicorn

    os.environ.setdefault("RETAILML_API_KEYS", api_key)
    get_settings.cache_clear()
    out.print(f"[bold]serving[/bold] on http://127.0.0.1:{port} (Ctrl-C to stop)")
    uvicorn.run(
        "retailml.serving.app:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def _online_lookup(
    settings: Settings, customer_id: str, feature_set: str = "customer_features"
) -> str:
    import asyncio

    from retailml.feature_engineering.feature_store import FeatureStore

    with FeatureStore(settings) as store:
        values = asyncio.run(store.get_online_features(feature_set, customer_id))
    shown = ", ".join(
        f"{name}={value:,.2f}" if isinstance(value, float) else f"{name}={value}"
        for name, value in values.items()
    )
    return f"{customer_id}: {shown}"


def _demo_events(customer_id: str, popularity: Any, *, seed: int) -> list[dict[str, Any]]:
    """A few transaction events as of now: two invoices of the customer and a guest's line.

    Args:
        customer_id: The customer buying.
        popularity: The product_popularity feature table (pandas): the products
            sold most, at their mean price.
        seed: Quantities and invoice numbers.
    """
    import datetime as dt
    import math
    import random
    import time

    by_product = popularity.groupby("stock_code").agg(
        amount=("total_amount_sum", "sum"), price=("unit_price_mean", "mean")
    )
    top = by_product.sort_values("amount", ascending=False).head(3)
    prices = {
        str(code): round(float(price), 2) if math.isfinite(price) and price > 0 else 1.0
        for code, price in top["price"].items()
    }
    codes = list(prices)
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    tag = f"{time.time_ns():x}"  # a re-run publishes new events, not duplicates
    lines: list[tuple[int, str | None, str]] = [(50, customer_id, code) for code in codes]
    lines += [(10, customer_id, codes[0]), (5, None, codes[0])]
    invoices = {minutes: f"{rng.randrange(600_000, 1_000_000)}" for minutes, _, _ in lines}
    return [
        {
            "event_id": f"demo-{tag}-{n}",
            "invoice_no": invoices[minutes],
            "stock_code": code,
            "quantity": rng.randint(1, 12),
            "invoice_date": now - dt.timedelta(minutes=minutes),
            "unit_price": prices[code],
            "customer_id": customer,
            "country": "United Kingdom",
        }
        for n, (minutes, customer, code) in enumerate(lines)
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; errors print one clear line, no traceback.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
    """
    try:
        # Report every invalid setting before any command runs.
        configure_logging(load_settings())
        # Without standalone mode, click returns typer.Exit's code instead of exiting.
        code = app(args=argv, prog_name="retailml", standalone_mode=False)
        if isinstance(code, int):
            return code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        return 130
    except typer.TyperException as exc:
        # Usage errors (bad option values, unknown commands): Typer's own message.
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            err.print(f"error: {escape(str(exc))}")
        return int(getattr(exc, "exit_code", 2))
    except RetailMLError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["app", "main", "run"]
