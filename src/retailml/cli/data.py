"""``retailml data``: generate synthetic transactions and ingest transaction files."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from retailml.cli._console import err, out, progress_bar, stage_bar
from retailml.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from retailml.data.ingest import IngestResult

data_app = typer.Typer(
    help="Generate synthetic transactions and ingest transaction files.",
    no_args_is_help=True,
)


def generate_file(
    *,
    rows: int,
    seed: int,
    output: Path,
    start: dt.date | None = None,
    end: dt.date | None = None,
    drift_start: dt.date | None = None,
    price_shift: float = 0.0,
    product_mix_shift: float = 0.0,
    new_country: str | None = None,
    anomaly_rate: float = 0.0,
) -> Path:
    """Generate ``rows`` transactions with a progress bar and write them to ``output``."""
    from retailml.data.generate import (
        DriftSpec,
        GeneratorConfig,
        generate_transactions,
        write_transactions,
    )

    drift = None
    if drift_start is not None:
        drift = DriftSpec(
            start=drift_start,
            price_shift=price_shift,
            product_mix_shift=product_mix_shift,
            new_country=new_country,
        )
    config = GeneratorConfig(rows=rows, seed=seed, drift=drift, anomaly_rate=anomaly_rate)
    if start is not None or end is not None:
        config = dataclasses.replace(config, start=start or config.start, end=end or config.end)
    with progress_bar("generating", total=rows) as advance:
        table = generate_transactions(config, progress=advance)
    return write_transactions(table, output)


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"expected a date as YYYY-MM-DD; got {value!r}", param_hint=option
        ) from None


@data_app.command("generate")
def generate(
    rows: Annotated[int, typer.Option(min=1, help="Number of transaction lines.")] = 100_000,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: RETAILML_SEED).")] = None,
    output: Annotated[
        Path,
        typer.Option(help="Output file; .csv or .parquet (the format follows the extension)."),
    ] = Path("online_retail.csv"),
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD.")] = None,
    drift_start: Annotated[
        str | None, typer.Option(help="Inject drift from this day on (YYYY-MM-DD).")
    ] = None,
    price_shift: Annotated[
        float, typer.Option(help="With --drift-start: relative price change, e.g. 0.25.")
    ] = 0.0,
    product_mix_shift: Annotated[
        float, typer.Option(help="With --drift-start: share of demand moved to other products.")
    ] = 0.0,
    new_country: Annotated[
        str | None, typer.Option(help="With --drift-start: a country that appears from then.")
    ] = None,
    anomaly_rate: Annotated[
        float, typer.Option(help="Share of rows made labelled anomalies (adds is_anomaly).")
    ] = 0.0,
) -> None:
    """Generate synthetic transactions in the UCI Online Retail layout.

    Deterministic by --seed. Includes the real file's quirks (guest
    customers, cancellations, duplicates, postage and fee codes, bad-debt
    adjustments) and the patterns that make models worth training.

    Example: retailml data generate --rows 1000000 --seed 7 --output sales.parquet
    """
    if drift_start is None and (price_shift or product_mix_shift or new_country):
        raise typer.BadParameter(
            "drift options need --drift-start YYYY-MM-DD", param_hint="--drift-start"
        )
    settings = get_settings()
    path = generate_file(
        rows=rows,
        seed=settings.seed if seed is None else seed,
        output=output,
        start=_date(start, "--start"),
        end=_date(end, "--end"),
        drift_start=_date(drift_start, "--drift-start"),
        price_shift=price_shift,
        product_mix_shift=product_mix_shift,
        new_country=new_country,
        anomaly_rate=anomaly_rate,
    )
    out.print(f"wrote {rows:,} rows to {path}")


def ingest_path(
    path: Path,
    *,
    mapping: Path | None,
    date_format: str | None,
    settings: Settings,
    show_progress: bool = True,
) -> IngestResult:
    """Ingest one file with a progress bar."""
    from retailml.data.ingest import ingest_file
    from retailml.data.schema import ColumnMapping

    column_mapping = ColumnMapping.load(mapping) if mapping is not None else None
    if not show_progress:
        return ingest_file(path, mapping=column_mapping, date_format=date_format, settings=settings)
    with stage_bar(f"ingesting {path.name}") as update:
        return ingest_file(
            path,
            mapping=column_mapping,
            date_format=date_format,
            settings=settings,
            progress=update,
        )


def print_ingest_result(result: IngestResult) -> None:
    """The human summary of an ingestion."""
    if result.status == "already_ingested":
        out.print(f"[yellow]{result.report.source_file} was already ingested; nothing changed.")
    out.print(result.report.summary(), markup=False)


@data_app.command("ingest")
def ingest(
    path: Annotated[Path, typer.Argument(help="A .csv, .xlsx or .parquet transaction file.")],
    mapping: Annotated[
        Path | None,
        typer.Option(help="YAML file of 'canonical_column: source_column' lines."),
    ] = None,
    date_format: Annotated[
        str | None,
        typer.Option(help="strftime format of the dates, e.g. %Y%m%d for 19970101."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the data-quality report as JSON.")
    ] = False,
) -> None:
    """Ingest a transaction file: bronze (as read) -> silver (typed, cleaned) + quarantine.

    Cancellations and returns are kept and flagged, exact duplicates removed,
    unusable rows quarantined with a reason; the counts reconcile exactly.
    Re-ingesting the same file changes nothing.

    Example: retailml data ingest online_retail.xlsx --json
    """
    settings = get_settings()
    result = ingest_path(
        path,
        mapping=mapping,
        date_format=date_format or settings.date_format,
        settings=settings,
        show_progress=not as_json,
    )
    if as_json:
        typer.echo(result.report.to_json())
        return
    print_ingest_result(result)
    err.print(f"report: {result.report_path}")
