"""``retailml diagnose model|serving`` and ``retailml recover``: the guide's troubleshooting."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from retailml.cli._console import err, out
from retailml.core.settings import get_settings

diagnose_app = typer.Typer(
    help="Diagnose a degrading model or a prediction service.", no_args_is_help=True
)


def _dump(payload: dict[str, Any]) -> None:
    out.print_json(json.dumps(payload, default=str))


@diagnose_app.command("model")
def diagnose_model(
    model: Annotated[str, typer.Argument(help="The model name.")],
    version: Annotated[
        str | None, typer.Option(help="Monitoring records of this version (default: deployed).")
    ] = None,
    window: Annotated[str, typer.Option(help="Recent data and errors, e.g. 30d, 8w.")] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Data drift, concept drift and health of a model, and what to do, most urgent first.

    Example: retailml diagnose model sales_forecast --window 30d
    """
    from retailml.monitoring.diagnostics import PerformanceDiagnostic

    async def diagnose() -> tuple[Any, Any, Any, Any]:
        with PerformanceDiagnostic(model, version, settings=get_settings()) as diagnostic:
            drift = await diagnostic.analyze_data_drift(time_window=window, features="all")
            concept = await diagnostic.analyze_concept_drift(window, window)
            health = await diagnostic.check_model_health()
            steps = diagnostic.generate_recommendations([drift, concept, health])
        return drift, concept, health, steps

    with err.status(f"diagnosing {model} ..."):
        drift, concept, health, steps = asyncio.run(diagnose())
    if as_json:
        _dump(
            {
                "data_drift": drift.to_dict(),
                "concept_drift": concept.to_dict(),
                "model_health": health.to_dict(),
                "recommendations": [step.to_dict() for step in steps],
            }
        )
        return
    verdict = "DRIFT" if drift.drift_detected else "no dataset drift"
    out.print(
        f"[bold]{model} {drift.model_version}[/bold]: {verdict}, {len(drift.drifted_features)} "
        f"of {drift.n_features} inputs drifted over the {escape(drift.current_source)}"
    )
    if concept.metric is not None:
        change = f"{concept.change:+.0%}" if concept.change is not None else "n/a"
        out.print(
            f"errors: {concept.metric} {concept.recent:.4g} vs {concept.baseline} at training "
            f"({change}); concept drift: {'yes' if concept.drift_detected else 'no'}"
        )
    else:
        out.print(f"errors: {escape(str(concept.reason))}")
    table = Table(title=f"health: {health.status}")
    for heading in ("check", "status", "detail"):
        table.add_column(heading)
    for check in health.checks.values():
        table.add_row(check.name, check.status, escape(check.detail))
    out.print(table)
    out.print("[bold]recommendations[/bold]")
    for step in steps:
        out.print(f"  {escape(str(step))}")


@diagnose_app.command("serving")
def diagnose_serving(
    endpoint: Annotated[str, typer.Argument(help="Base URL of `retailml serve`.")],
    window: Annotated[str, typer.Option(help="Latency window, e.g. 1h, 30m.")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Health, latency percentiles, resources and the standard prediction test suite.

    Exits 1 when the service is not healthy or a prediction test fails.

    Example: retailml diagnose serving http://127.0.0.1:8000
    """
    from retailml.deployment.diagnostics import ServingDiagnostic

    diagnostic = ServingDiagnostic(endpoint, settings=get_settings())

    async def diagnose() -> tuple[Any, Any, Any, Any]:
        health = await diagnostic.check_endpoint_health()
        if health.status == "unreachable":
            return health, None, None, None
        latency = await diagnostic.analyze_latency(time_window=window, percentiles=[50, 95, 99])
        resources = await diagnostic.check_resource_usage()
        predictions = await diagnostic.test_predictions("standard_test_suite")
        return health, latency, resources, predictions

    with err.status(f"diagnosing {endpoint} ..."):
        health, latency, resources, predictions = asyncio.run(diagnose())
    failed = health.status != "healthy" or (predictions is not None and not predictions.passed)
    if as_json:
        _dump(
            {
                "health": health.to_dict(),
                "latency": latency.to_dict() if latency else None,
                "resources": resources.to_dict() if resources else None,
                "predictions": predictions.to_dict() if predictions else None,
            }
        )
    else:
        models = ", ".join(f"{m['model_name']}:{m['version']}" for m in health.models) or "none"
        out.print(f"[bold]{endpoint}[/bold]: {health.status}; models: {models}")
        for issue in health.issues:
            out.print(f"  issue: {escape(issue)}")
        if latency is not None:
            shown = ", ".join(f"{k} {v:.1f} ms" for k, v in latency.percentiles.items())
            out.print(f"latency ({latency.source}): {shown}")
        if resources is not None:
            if resources.memory_rss_mb is not None:
                out.print(
                    f"resources ({resources.source}): CPU {resources.cpu_percent or 0:.0f} %, "
                    f"memory {resources.memory_rss_mb:.0f} MiB, threads {resources.threads}"
                )
            else:
                out.print(f"resources: {escape(resources.detail)}")
        if predictions is not None:
            table = Table(
                title=f"predictions: {predictions.n_passed} passed, {predictions.n_failed} failed"
            )
            for heading in ("case", "status", "result"):
                table.add_column(heading)
            for case in predictions.cases:
                table.add_row(
                    escape(case.name),
                    str(case.status_code),
                    ("ok: " if case.passed else "FAILED: ") + escape(case.reason),
                )
            out.print(table)
    if failed:
        raise typer.Exit(code=1)


def recover(
    job_id: Annotated[str, typer.Argument(help="The failed training job (its id).")],
    backup_date: Annotated[
        datetime | None,
        typer.Option(
            help="Data corruption: newest intact data at or before this time "
            "(default: the last successful run's)."
        ),
    ] = None,
    memory_multiplier: Annotated[
        float, typer.Option(min=1.0, help="Resource exhaustion: memory limit factor.")
    ] = 1.5,
    cpu_multiplier: Annotated[
        float, typer.Option(min=1.0, help="Resource exhaustion: CPU factor.")
    ] = 1.2,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Analyse and show the fix; do not restart.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify a failed training job, apply the fix, and restart it as a new job.

    data_corruption: pin the newest intact data version; resource_exhaustion:
    raise memory and CPUs; hyperparameter_error: the last successful run's
    hyperparameters. Exits 1 when the restarted job fails too.

    Example: retailml recover 3f2a... --dry-run
    """
    from retailml.training.recovery import TrainingRecovery

    with TrainingRecovery(job_id, settings=get_settings()) as recovery:
        analysis = recovery.analyze_failure()
        if analysis.failure_type == "data_corruption":
            recovery.restore_training_data(backup_date=backup_date or analysis.last_known_good)
        elif analysis.failure_type == "resource_exhaustion":
            recovery.adjust_training_resources(memory_multiplier, cpu_multiplier)
        elif analysis.failure_type == "hyperparameter_error":
            recovery.rollback_hyperparameters()
        new_job = None
        if not dry_run:
            with err.status(f"restarting {analysis.job_id[:12]} ..."):
                new_job = recovery.restart_training()
        changes = list(recovery.changes)
    if as_json:
        _dump(
            {
                "analysis": analysis.to_dict(),
                "changes": changes,
                "new_job": new_job.to_dict() if new_job else None,
            }
        )
    else:
        out.print(f"[bold]{analysis.job_id}[/bold]: {analysis.failure_type}")
        for line in analysis.evidence:
            out.print(f"  evidence: {escape(line)}")
        for line in changes or ["none: the same inputs again"]:
            out.print(f"  fix: {escape(line)}")
        if new_job is not None:
            out.print(f"restarted as job {new_job.id}: {new_job.status}")
            if new_job.status != "succeeded":
                out.print(f"  {new_job.error_type}: {escape(str(new_job.error_message))[:500]}")
    if new_job is not None and new_job.status != "succeeded":
        raise typer.Exit(code=1)
