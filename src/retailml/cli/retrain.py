"""``retailml retrain``, ``retailml scheduler`` and ``retailml jobs``: automated retraining.

``retailml retrain --config configs/sales_forecast.yaml --data-window 2y
--auto-deploy-if-better`` is the guide's weekly ``retrain_models.sh`` step;
``retailml retrain --check`` tells cron users whether a model needs retraining;
``retailml scheduler`` runs the schedules of ``retraining.yaml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from retailml.cli._console import err, out
from retailml.cli.train import load_training_config
from retailml.core.errors import ConfigError, problem
from retailml.core.settings import get_settings

jobs_app = typer.Typer(
    help="Training and retraining job records: list them, or show one.",
    invoke_without_command=True,
)


def _pairs(texts: list[str] | None, option: str) -> dict[str, float]:
    out_map: dict[str, float] = {}
    for text in texts or []:
        name, sep, value = text.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number):
            raise ConfigError(
                problem("METRIC=NUMBER such as mape=0.15", repr(text), "fix it", subject=option)
            )
        out_map[name.strip()] = number
    return out_map


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def _print_decision(decision: Any) -> None:
    mark = "[bold red]retrain[/bold red]" if decision.should_retrain else "[green]ok[/green]"
    version = decision.champion_version or "none"
    out.print(f"{decision.model_name} (production {version}): {mark}")
    for check in decision.checks:
        flag = "FIRED" if check.fired else "ok   "
        out.print(f"  {flag} {check.trigger:<22} {escape(check.detail)}")
    if not decision.checks:
        out.print("  no trigger configured")


def _print_run(name: str, run: Any) -> None:
    if run.decision is not None and not run.decision.should_retrain:
        out.print(f"{name}: no retrain ({escape(run.decision.reason)})")
        return
    model = run.model
    if model is None:
        return
    if not model.trained:
        out.print(f"{name}: skipped: {escape(model.reason)} (job {model.job_id})")
        return
    shown = ", ".join(f"{k} {v:.4g}" for k, v in list(model.metrics.items())[:4])
    out.print(f"{name}: retrained (job {model.job_id}, run {model.result.run_id}): {shown}")
    if run.comparison is not None:
        verdict = "better" if run.comparison.is_better else "not better"
        out.print(f"  vs champion: {verdict}: {escape(run.comparison.reason)}")
    if run.deployment is not None:
        out.print(f"  deployment: {run.deployment.status}: {escape(run.deployment.reason)}")


# --- retrain ---------------------------------------------------------------------------------


def retrain(
    check: Annotated[
        bool,
        typer.Option("--check", help="Only evaluate the triggers and print the decision."),
    ] = False,
    model: Annotated[
        list[str] | None,
        typer.Option(help="A model to check (repeatable; default every model of the schedules)."),
    ] = None,
    schedules: Annotated[
        Path,
        typer.Option(help="Schedules file with each model's triggers (see `retailml scheduler`)."),
    ] = Path("retraining.yaml"),
    schedule: Annotated[
        str | None,
        typer.Option(help="--check: a schedule trigger (weekly, or a cron expression)."),
    ] = None,
    performance_threshold: Annotated[
        list[str] | None,
        typer.Option(help="--check: METRIC=LIMIT performance trigger (repeatable)."),
    ] = None,
    drift_threshold: Annotated[
        float | None, typer.Option(help="--check: share of drifted columns that triggers.")
    ] = None,
    min_new_data: Annotated[
        int | None, typer.Option(min=1, help="--check: new silver rows that trigger.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Retrain from this training config."),
    ] = None,
    data: Annotated[
        str,
        typer.Option(help="'production' (the workspace's current data) or a Parquet/CSV path."),
    ] = "production",
    data_window: Annotated[
        str | None, typer.Option(help="Train on the last window of data, e.g. 2y, 12M, 90d.")
    ] = None,
    validation_strategy: Annotated[
        str | None, typer.Option(help="holdout, time_series_split or kfold (k-fold).")
    ] = None,
    auto_deploy_if_better: Annotated[
        bool,
        typer.Option(
            "--auto-deploy-if-better",
            help="Deploy (governed) when the challenger beats the champion on the holdout.",
        ),
    ] = False,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            help="Auto-deploy limit METRIC=LIMIT (repeatable; default the config's "
            "validation.performance_thresholds)."
        ),
    ] = None,
    deployment_strategy: Annotated[
        str, typer.Option(help="canary, blue_green or direct.")
    ] = "canary",
    approver: Annotated[
        list[str] | None,
        typer.Option(help="A role whose approval production needs (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Retrain a model from a training config (and deploy it if better), or --check triggers.

    Examples:
      retailml retrain --config configs/sales_forecast.yaml --data-window 2y --auto-deploy-if-better
      retailml retrain --check --model sales_forecast --performance-threshold mape=0.2 --json

    --check exits 0 with the decision (cron: `retailml retrain --check --json | jq`);
    to retrain when a trigger fires, run `retailml scheduler --once` from cron.
    """
    if check:
        _check(
            model,
            schedules,
            schedule,
            performance_threshold,
            drift_threshold,
            min_new_data,
            as_json,
        )
        return
    if config is None:
        raise ConfigError(
            problem(
                "--config PATH (retrain from a training config) or --check",
                "neither",
                "e.g. retailml retrain --config configs/sales_forecast.yaml "
                "--auto-deploy-if-better",
                subject="retailml retrain",
            )
        )
    _retrain_from_config(
        config,
        data,
        data_window,
        validation_strategy,
        auto_deploy_if_better,
        _pairs(threshold, "--threshold") or None,
        deployment_strategy,
        approver,
        as_json,
    )


def _check(
    models: list[str] | None,
    schedules_path: Path,
    schedule: str | None,
    performance: list[str] | None,
    drift: float | None,
    new_rows: int | None,
    as_json: bool,
) -> None:
    from retailml.automation.retraining import AutoRetrainingPipeline
    from retailml.automation.scheduler import load_schedules

    triggers: dict[str, Any] = {}
    if schedule is not None:
        triggers["schedule"] = schedule
    if performance:
        triggers["performance_threshold"] = _pairs(performance, "--performance-threshold")
    if drift is not None:
        triggers["data_drift_threshold"] = drift
    if new_rows is not None:
        triggers["min_new_data_points"] = new_rows
    if triggers:
        if not models:
            raise ConfigError(
                problem(
                    "--model NAME with trigger options",
                    "no --model",
                    "add --model sales_forecast",
                    subject="retailml retrain --check",
                )
            )
        wanted = {name: triggers for name in models}
    else:
        entries = load_schedules(schedules_path).models
        wanted = {e.model_name: e.triggers for e in entries if not models or e.model_name in models}
        missing = sorted(set(models or []) - set(wanted))
        if missing:
            raise ConfigError(
                problem(
                    f"models listed in {schedules_path}",
                    f"{missing} (listed: {sorted(e.model_name for e in entries)})",
                    "add them to the schedules file or pass trigger options",
                    subject="--model",
                )
            )
    settings = get_settings()
    decisions = []
    for name, model_triggers in wanted.items():
        with AutoRetrainingPipeline(name, model_triggers, settings=settings) as pipeline:
            decisions.append(pipeline.check_retrain_conditions_sync())
    if as_json:
        _print_json([d.to_dict() for d in decisions])
        return
    for decision in decisions:
        _print_decision(decision)


def _retrain_from_config(
    config_path: Path,
    data: str,
    data_window: str | None,
    validation_strategy: str | None,
    auto_deploy: bool,
    thresholds: dict[str, float] | None,
    deployment_strategy: str,
    approvers: list[str] | None,
    as_json: bool,
) -> None:
    from retailml.automation.retraining import DEFAULT_APPROVERS, AutoRetrainingPipeline

    loaded = load_training_config(config_path)
    name = str(loaded.get("model_name") or loaded["model_type"])
    if thresholds is None:
        validation = dict(loaded.get("validation") or {})
        thresholds = dict(validation.get("performance_thresholds") or {}) or None
    pipeline = AutoRetrainingPipeline(
        name,
        config=loaded,
        data_window=data_window,
        approvers=approvers or DEFAULT_APPROVERS,
        settings=get_settings(),
    )
    pipeline.config_path = str(config_path)
    with pipeline, err.status(f"retraining {name} ({loaded['model_type']}) ..."):
        run = asyncio.run(
            pipeline.run(
                force=True,
                data_source=data,
                validation_strategy=validation_strategy,
                auto_deploy_threshold=thresholds,
                auto_deploy=auto_deploy,
                deployment_strategy=deployment_strategy,
            )
        )
    if as_json:
        _print_json(run.to_dict())
    else:
        _print_run(name, run)


# --- scheduler -------------------------------------------------------------------------------


def scheduler(
    schedules: Annotated[
        Path, typer.Option(help="The schedules file (models, triggers, how to retrain).")
    ] = Path("retraining.yaml"),
    once: Annotated[bool, typer.Option("--once", help="Run one tick and exit (for cron).")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between ticks.")] = 60.0,
    max_ticks: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many ticks.")
    ] = None,
    stale_after: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds without heartbeat before a job is abandoned."),
    ] = None,
    heartbeat: Annotated[
        float | None, typer.Option(min=0.05, help="Seconds between a running job's heartbeats.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each tick as one JSON line.")
    ] = False,
) -> None:
    """Run the retraining schedules: every tick reaps dead jobs, checks each model's
    triggers and retrains (under a database lease), validates and deploys when due.

    The schedules file (default ./retraining.yaml):

      models:
        sales_forecast:
          triggers: {schedule: weekly, performance_threshold: {mape: 0.2},
                     data_drift_threshold: 0.05, min_new_data_points: 1000}
          auto_deploy_threshold: {mape: 0.15}

    Ctrl-C or SIGTERM stops after the model being retrained (a second one stops at once).

    Example: retailml scheduler --interval 300
    """
    from retailml.automation.scheduler import Scheduler, load_schedules

    parsed = load_schedules(schedules)
    settings = get_settings()

    def on_tick(report: Any) -> None:
        if as_json:
            out.print(json.dumps(report.to_dict(), default=str), soft_wrap=True)
            return
        for job_id in report.reaped:
            out.print(f"tick {report.tick}: job {job_id} abandoned (its worker stopped)")
        for name, outcome in report.resumed.items():
            out.print(f"{name}: approved {outcome.version}: {outcome.status}: {outcome.reason}")
        for name, run in report.runs.items():
            _print_run(name, run)
        for name, message in report.errors.items():
            err.print(f"[red]{name}: failed:[/red] {escape(message)}")

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)

        def request_stop() -> None:
            if stop.is_set():
                raise SystemExit(130)
            err.print("stopping after the current model (again to stop now) ...")
            stop.set()

        for sig in signals:
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, request_stop)
        with Scheduler(
            parsed, settings, stale_after_s=stale_after, heartbeat_s=heartbeat
        ) as runner:
            return await runner.run(
                interval_s=interval,
                max_ticks=1 if once else max_ticks,
                stop=stop,
                on_tick=on_tick,
            )

    names = ", ".join(m.model_name for m in parsed.models)
    err.print(f"scheduler: {names}; every {interval:g} s (Ctrl-C stops)")
    ticks = asyncio.run(main())
    err.print(f"scheduler stopped after {ticks} tick(s)")


# --- jobs ------------------------------------------------------------------------------------


@jobs_app.callback()
def jobs_list(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only this model's jobs.")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="queued, running, succeeded, failed, abandoned or skipped."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List training and retraining jobs, newest first; `retailml jobs show ID` for one.

    Example: retailml jobs --model sales_forecast --status failed
    """
    if ctx.invoked_subcommand is not None:
        return
    from retailml.core.db import PlatformDB
    from retailml.core.db_jobs import JOB_STATUSES
    from retailml.core.jobs import list_jobs

    if status is not None and status not in JOB_STATUSES:
        raise ConfigError(
            problem(f"a status among {', '.join(JOB_STATUSES)}", repr(status), "pick one")
        )
    db = PlatformDB.from_settings(get_settings())
    try:
        records = list_jobs(db, model_name=model, status=status, limit=limit)
    finally:
        db.dispose()
    if as_json:
        _print_json([r.to_dict() for r in records])
        return
    if not records:
        out.print("no jobs")
        return
    out.print(
        f"{'id':<32}  {'kind':<9} {'model':<22} {'status':<10} {'created (UTC)':<19} "
        f"{'seconds':>8}  trigger / outcome"
    )
    for record in records:
        outcome = record.outcome
        metrics = outcome.get("metrics") or {}
        summary = (
            record.error_message
            or outcome.get("reason")
            or (outcome.get("deployment") or {}).get("status")
            or ", ".join(f"{k} {v:.3g}" for k, v in list(metrics.items())[:2])
            or ""
        )
        seconds = record.duration_s
        shown = "" if seconds is None else f"{seconds:.1f}"
        out.print(
            f"{record.id:<32}  {record.kind:<9} {record.model_name:<22} {record.status:<10} "
            f"{record.created_at:%Y-%m-%d %H:%M:%S} {shown:>8}  {escape(record.trigger)}"
            + (f" / {escape(str(summary))[:120]}" if summary else "")
        )


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show one job: inputs, outcome, error and timing.

    Example: retailml jobs show 3f2a9c...
    """
    from retailml.core.db import PlatformDB
    from retailml.core.jobs import get_job

    db = PlatformDB.from_settings(get_settings())
    try:
        record = get_job(db, job_id)
    finally:
        db.dispose()
    # Inputs may hold a tracking store URL with its password (recovery reconnects with it).
    data = _masked(record.to_dict())
    if as_json:
        _print_json(data)
        return
    for key in ("id", "kind", "model_name", "status", "trigger", "owner", "parent_job_id"):
        out.print(f"{key:<14} {data[key]}")
    for key in ("created_at", "started_at", "heartbeat_at", "finished_at", "duration_s"):
        out.print(f"{key:<14} {data[key]}")
    out.print("inputs:")
    out.print_json(json.dumps(data["inputs"], default=str))
    out.print("outcome:")
    out.print_json(json.dumps(data["outcome"], default=str))
    if record.error_type:
        out.print(f"[red]error[/red] {record.error_type}: {escape(record.error_message or '')}")


def _masked(value: Any) -> Any:
    """``value`` with every URL password inside it replaced by ``***``."""
    from retailml.core.settings import masked_setting

    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return masked_setting("", value) if isinstance(value, str) else value
