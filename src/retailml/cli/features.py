"""``retailml features``: build feature sets, materialise and read them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from retailml.cli._console import err, out
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
