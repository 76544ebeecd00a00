"""``retailml features``: build feature sets, materialise and read them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from retailml.cli._console import err, out
from retailml.core.errors import NotFoundError, problem
from retailml.core.io import read_yaml_mapping
from retailml.core.settings import Settings, get_settings

features_app = typer.Typer(
    help="Build feature sets into the feature store and read them back.",
    no_args_is_help=True,
)

DEFAULT_CONFIG = Path("configs/features.yaml")

#: Used when --config is not given and configs/features.yaml does not exist.
BUILTIN_CONFIG: dict[str, Any] = {
    "source_tables": ["bronze_sales", "dim_customers", "dim_products"],
    "feature_sets": [
        "customer_rfm",
        "product_popularity",
        "seasonal_trends",
        "temporal",
        "daily_sales",
    ],
    "validation_rules": {
        "missing_threshold": 0.05,
        "outlier_detection": True,
        "schema_validation": True,
    },
    "output_format": "parquet",
    "partitioning": ["year", "month"],
}


def load_pipeline_config(path: Path | None) -> dict[str, Any]:
    """Read a pipeline config file; without one, configs/features.yaml or the built-in default."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return dict(BUILTIN_CONFIG)
        path = DEFAULT_CONFIG
    return read_yaml_mapping(
        path,
        subject="--config",
        shape="pipeline settings: source_tables, feature_sets, ... (see configs/features.yaml)",
    )


def build_features(config: dict[str, Any], *, settings: Settings, force: bool = False) -> Any:
    """Run the feature pipeline with a status line; returns its PipelineResult."""
    from retailml.feature_engineering.feature_pipeline import FeatureEngineeringPipeline

    pipeline = FeatureEngineeringPipeline(config, settings=settings)
    names = ", ".join(config.get("feature_sets", []))
    with err.status(f"building feature sets: {names}"):
        return pipeline.run(force=force)


def print_build(result: Any, *, root: Path) -> None:
    """A table of what the pipeline published; paths relative to the workspace ``root``."""
    table = Table(title=f"feature sets, published in {root}/features/<set>/<version>")
    for column in ("feature set", "version", "rows", "validation"):
        table.add_column(column, no_wrap=True)
    for name, item in result.items():
        if item.validation.passed:
            status = "passed"
        else:
            status = f"[yellow]{len(item.validation.failures)} warning(s)"
        reused = " (reused)" if item.reused else ""
        table.add_row(name, item.version + reused, f"{item.row_count:,}", status)
    out.print(table)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", markup=True)


@features_app.command("build")
def build(
    config: Annotated[
        Path | None,
        typer.Option(help="Pipeline config YAML (default: configs/features.yaml, else built-in)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Recompute even when this version is already published.")
    ] = False,
) -> None:
    """Compute feature sets from the silver transactions and publish them.

    Each set is versioned by its definition and its input data; an unchanged
    set is reused, a failing validation rule stops it (or warns, if the config
    says on_validation_failure: warn).

    Example: retailml features build --config configs/features.yaml
    """
    settings = get_settings()
    result = build_features(load_pipeline_config(config), settings=settings, force=force)
    print_build(result, root=settings.home.resolve())


def _published_sets(settings: Settings) -> list[str]:
    root = settings.home.resolve() / "features"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "_latest").is_file())


def materialize_features(
    settings: Settings, feature_sets: list[str] | None = None
) -> dict[str, tuple[str, str, int]]:
    """Register every published feature set under its guide name and load the online store.

    Returns:
        ``registered name -> (source set, version, entities written)``.
    """
    from retailml.feature_engineering.feature_store import FEATURE_SET_ALIASES, FeatureStore

    by_source = {source: name for name, source in FEATURE_SET_ALIASES.items()}
    published = _published_sets(settings)
    if not published:
        raise NotFoundError(
            problem(
                "published feature sets",
                f"none under {settings.home.resolve() / 'features'}",
                "run 'retailml features build' first",
                subject="features materialize",
            )
        )
    wanted = feature_sets or [by_source.get(source, source) for source in published]
    done: dict[str, tuple[str, str, int]] = {}
    with FeatureStore(settings) as store, err.status("registering and materialising features"):
        for name in wanted:
            registration = store.register_feature_set(name, materialize=False)
            done[name] = (registration.source, registration.version, 0)
        counts = store.materialize(feature_sets=list(done))
    return {name: (src, ver, counts.get(name, 0)) for name, (src, ver, _) in done.items()}


@features_app.command("materialize")
def materialize(
    feature_set: Annotated[
        list[str] | None,
        typer.Option("--set", help="Registered name, e.g. customer_features (default: all)."),
    ] = None,
) -> None:
    """Register the published feature sets in the Feast store and load the online store.

    Each published set is registered under the guide's name (customer_rfm as
    customer_features, product_popularity as product_features, ...), pointing
    at its latest version, then its latest values are loaded online.

    Example: retailml features materialize --set customer_features
    """
    settings = get_settings()
    done = materialize_features(settings, feature_set)
    table = Table(title=f"online store: {settings.online_store}")
    for column in ("feature set", "source", "version", "entities"):
        table.add_column(column, no_wrap=True)
    for name, (source, version, count) in done.items():
        table.add_row(name, source, version, f"{count:,}")
    out.print(table)


def _entity(value: str) -> Any:
    """``12345`` for one key; ``country=United Kingdom,date=2011-12-25`` for composite keys."""
    if "=" not in value:
        return value
    pairs = [part.split("=", 1) for part in value.split(",")]
    if any(len(pair) != 2 or not pair[0] for pair in pairs):
        raise typer.BadParameter(
            f"expected KEY=VALUE pairs separated by commas; got {value!r}", param_hint="--entity"
        )
    return {key.strip(): val.strip() for key, val in pairs}


@features_app.command("get")
def get(
    feature_set: Annotated[str, typer.Option("--set", help="Registered feature set name.")],
    entity: Annotated[
        str,
        typer.Option(help="Entity id, or KEY=VALUE pairs for composite keys."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Read one entity's online feature values.

    Example: retailml features get --set customer_features --entity 12345
    """
    import asyncio
    import json

    from retailml.feature_engineering.feature_store import FeatureStore

    settings = get_settings()
    with FeatureStore(settings) as store:
        values = asyncio.run(store.get_online_features(feature_set, _entity(entity)))
    if as_json:
        payload = {
            "feature_set": feature_set,
            "entity": values.entity_id,
            "found": values.found,
            "version": values.version,
            "event_timestamp": values.event_timestamp,
            "features": values.to_dict(),
        }
        typer.echo(json.dumps(payload, default=str))
        return
    if not values.found:
        err.print(f"[yellow]{entity!r} is not in the online store of {feature_set}[/yellow]")
        raise typer.Exit(1)
    table = Table(title=f"{feature_set} {entity} (version {values.version})")
    table.add_column("feature")
    table.add_column("value")
    for name, value in values.items():
        shown = "" if value is None else f"{value:.4f}" if isinstance(value, float) else f"{value}"
        table.add_row(name, shown)
    out.print(table)


@features_app.command("versions")
def versions(
    feature_set: Annotated[str, typer.Option("--set", help="Registered feature set name.")],
) -> None:
    """List the published versions of a registered feature set.

    Example: retailml features versions --set customer_features
    """
    from retailml.feature_engineering.feature_store import FeatureStore

    with FeatureStore(get_settings()) as store:
        rows = store.list_versions(feature_set)
    table = Table(title=feature_set)
    for column in ("version", "created", "rows", "latest", "serving"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row.version,
            f"{row.created_at:%Y-%m-%d %H:%M}" if row.created_at else "",
            "" if row.row_count is None else f"{row.row_count:,}",
            "yes" if row.latest else "",
            "yes" if row.serving else "",
        )
    out.print(table)


@features_app.command("rollback")
def rollback(
    feature_set: Annotated[str, typer.Option("--set", help="Registered feature set name.")],
    version: Annotated[
        str | None, typer.Option(help="Version to serve (default: the one before).")
    ] = None,
) -> None:
    """Serve the previous (or a given) published version again, offline and online.

    Example: retailml features rollback --set customer_features
    """
    from retailml.feature_engineering.feature_store import FeatureStore

    with FeatureStore(get_settings()) as store:
        registration = store.rollback(feature_set, version)
    out.print(f"{feature_set} now serves version {registration.version}")
