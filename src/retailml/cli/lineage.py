"""``retailml lineage``: what produced a model or dataset, and what a dataset feeds."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from retailml.cli._console import out
from retailml.core.errors import ConfigError, problem
from retailml.core.settings import get_settings

lineage_app = typer.Typer(
    help="Data and model lineage from the OpenLineage events retailml records.",
    no_args_is_help=True,
)


@lineage_app.command("show")
def show(
    dataset: Annotated[
        str | None,
        typer.Argument(
            help="A dataset: model.<name>, feature_set.<name>, silver.transactions, file.<name>."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="A model name (same as model.<name>).")] = None,
    version: Annotated[
        str | None, typer.Option(help="Only the runs that wrote this version (upstream).")
    ] = None,
    downstream: Annotated[
        bool,
        typer.Option(
            "--downstream/--upstream",
            help="What the dataset feeds (downstream) or what produced it (upstream, default "
            "for models).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Show lineage in either direction.

    Upstream: the data, code version and parameters of every run that led to
    the dataset. Downstream: the feature sets and models a dataset feeds.

    Example: retailml lineage show --model sales_forecast --version 1.0.0
    Example: retailml lineage show silver.transactions --downstream
    """
    from retailml.lineage.lineage_tracker import LineageTracker

    if (dataset is None) == (model is None):
        raise ConfigError(
            problem(
                "a dataset argument or --model (one of them)",
                f"dataset={dataset!r}, model={model!r}",
                "e.g. retailml lineage show --model sales_forecast",
                subject="lineage show",
            )
        )
    name = dataset if dataset is not None else f"model.{model}"
    tracker = LineageTracker(get_settings())
    graph = tracker.downstream(name) if downstream else tracker.upstream(name, version)
    if as_json:
        out.print_json(json.dumps(graph.to_dict(), default=str))
        return
    table = Table(title=f"{graph.direction} of {name}" + (f" @ {version}" if version else ""))
    for column in ("when", "job", "reads", "writes", "code", "parameters"):
        table.add_column(column, overflow="fold")
    for step in graph.steps:
        params = ", ".join(f"{k}={v}" for k, v in list(step.parameters.items())[:6])

        def shown(names: tuple[str, ...], versions: dict[str, str] = step.versions) -> str:
            return "\n".join(f"{n}@{versions[n]}" if n in versions else n for n in names)

        table.add_row(
            step.event_time[:19],
            step.job,
            shown(step.inputs),
            shown(step.outputs),
            (step.code_version or "")[:12],
            params,
        )
    out.print(table)
    if downstream:
        out.print(f"feature sets: {', '.join(graph.feature_sets) or 'none'}")
        out.print(f"models:       {', '.join(graph.models) or 'none'}")
