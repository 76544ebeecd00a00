"""``retailml maintenance``: the guide's data-freshness check and model cleanup."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from retailml.cli._console import err, out
from retailml.core.settings import get_settings

maintenance_app = typer.Typer(
    help="Check data freshness and retire old model versions.", no_args_is_help=True
)


@maintenance_app.command("check-freshness")
def check_freshness(
    max_age: Annotated[
        str,
        typer.Option(help="Stale when nothing was ingested for this long (30m, 12h, 2d, 1w)."),
    ] = "2d",
    max_event_age: Annotated[
        str | None,
        typer.Option(
            help="Also stale when the newest transaction is older than this (off by default: "
            "sample data is historical)."
        ),
    ] = None,
    models: Annotated[
        bool,
        typer.Option("--models/--no-models", help="Report production models' training data."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report how fresh silver transactions, feature sets and production models' data are.

    Exits with status 1 when silver data or a feature set is stale, missing or
    behind, so a retraining script stops before it trains on old data.
    Production models trained on older data are reported (retrain them) but do
    not fail the check.

    Example: retailml maintenance check-freshness --max-age 2d
    """
    from retailml.automation.maintenance import check_freshness as check
    from retailml.automation.maintenance import format_age, parse_age

    with err.status("checking data freshness ..."):
        report = check(
            parse_age(max_age, subject="--max-age"),
            max_event_age=parse_age(max_event_age, subject="--max-event-age")
            if max_event_age
            else None,
            models=models,
            settings=get_settings(),
        )
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        table = Table(title=f"data freshness (max age {format_age(report.max_age)})")
        for column in ("input", "version", "newest event", "arrived", "age", "status"):
            table.add_column(column, no_wrap=column != "input")
        kinds = {"silver": "", "feature_set": "features ", "model": "model "}
        for item in report.items:
            table.add_row(
                kinds.get(item.kind, f"{item.kind} ") + item.name,
                (item.version or "-")[:8],
                f"{item.newest_event:%Y-%m-%d}" if item.newest_event else "-",
                f"{item.ingested_at:%Y-%m-%d %H:%M}" if item.ingested_at else "-",
                format_age(item.ingestion_age) if item.ingestion_age is not None else "-",
                item.status,
            )
        out.print(table)
        for item in report.items:
            if item.status not in ("fresh", "current"):
                out.print(f"  {item.kind} {item.name}: {item.detail}")
        out.print(report.summary())
    if report.stale:
        raise typer.Exit(code=1)


@maintenance_app.command("cleanup")
def cleanup(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be done; change nothing.")
    ] = False,
    keep: Annotated[
        int, typer.Option(min=0, help="Newest versions of a non-production model always kept.")
    ] = 5,
    older_than: Annotated[
        str, typer.Option(help="Delete older versions beyond --keep registered this long ago.")
    ] = "30d",
    archive_unused: Annotated[
        str, typer.Option(help="Archive models not used (loaded, served, deployed) this long.")
    ] = "90d",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete old versions and archive idle models; never touch what serves.

    The guide's policy: keep the latest 5 versions of models not in
    production, delete the older ones registered more than 30 days ago, and
    archive models unused for 90 days. Versions holding an alias (production,
    staging, canary), deployed, in a running rollout or A/B test are left alone.

    Example: retailml maintenance cleanup --dry-run
    """
    from retailml.automation.maintenance import CleanupPolicy, parse_age, run_cleanup
    from retailml.registry.model_registry import ModelRegistry

    policy = CleanupPolicy.of(
        keep=keep,
        older_than=parse_age(older_than, subject="--older-than"),
        archive_unused=parse_age(archive_unused, subject="--archive-unused"),
    )
    with (
        ModelRegistry(get_settings()) as registry,
        err.status("planning the cleanup ..." if dry_run else "cleaning up ..."),
    ):
        report = run_cleanup(registry, policy, dry_run=dry_run)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    title = "cleanup plan (dry run: nothing changed)" if dry_run else "cleanup"
    table = Table(title=title)
    for column in ("action", "model", "version", "status", "why"):
        table.add_column(column)
    for action in report.actions:
        table.add_row(
            action.action,
            action.model_name,
            action.version,
            action.status,
            action.detail or action.reason,
        )
    if report.actions:
        out.print(table)
    for spared in report.protected:
        out.print(f"  kept {spared.model_name} {spared.version}: {'; '.join(spared.reasons)}")
    out.print(report.summary())
