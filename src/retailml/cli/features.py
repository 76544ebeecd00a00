"""``retailml features``: build feature sets, materialise and read them, stream real-time ones."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from retailml.cli._console import err, out
from retailml.core.errors import NotFoundError, StateError, problem
from retailml.core.io import read_yaml_mapping
from retailml.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from retailml.feature_engineering.stream import EventSource, StreamConsumer, StreamStats

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


# --------------------------------------------------------------------------- stream


def stream_source(
    settings: Settings,
    kind: Literal["directory", "redis"] | None = None,
    stream: str | None = None,
) -> EventSource:
    """The event source of the settings (``stream_source``, ``stream_name``), or as given.

    Args:
        settings: The settings; ``redis_url`` is the Redis of a Redis source.
        kind: ``directory`` (``<home>/stream``) or ``redis``; default the setting.
        stream: The Redis stream key; default the ``stream_name`` setting.
    """
    from retailml.feature_engineering.stream import DirectorySource, RedisStreamSource

    if (kind or settings.stream_source) == "redis":
        return RedisStreamSource(settings.redis_url, stream=stream or settings.stream_name)
    return DirectorySource.from_settings(settings)


def _describe_source(source: EventSource) -> str:
    from retailml.feature_engineering.stream import DirectorySource, RedisStreamSource

    if isinstance(source, DirectorySource):
        return f"{source.incoming}"
    if isinstance(source, RedisStreamSource):
        return f"Redis stream {source.name}"  # redis://host:port/db/stream#group, no password
    return repr(source)


def _dead_letter_list(source: EventSource) -> str:
    from retailml.feature_engineering.stream import DirectorySource, RedisStreamSource

    if isinstance(source, DirectorySource):
        return f"{source.dead_letter_file}"
    if isinstance(source, RedisStreamSource):
        return f"Redis stream {source.dead_letter_stream}"
    return repr(source)


@contextlib.contextmanager
def _redis_errors(source: EventSource) -> Iterator[None]:
    """Redis errors the consumer does not translate (timeouts, wrong key type) as StateError."""
    import redis

    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise StateError(
            problem(
                "a reachable Redis serving the event stream",
                f"{type(exc).__name__}: {exc}",
                "start Redis or correct RETAILML_REDIS_URL / --stream",
                subject=f"features stream ({_describe_source(source)})",
            )
        ) from exc


@contextlib.contextmanager
def _live_status(consumer: StreamConsumer, where: str, until: str) -> Iterator[None]:
    """A status line on stderr with this run's counts, refreshed from the consumer's state."""
    start = consumer.status()
    done = threading.Event()
    head = f"streaming from {escape(where)}"
    with err.status(f"{head} ({until})") as status:

        def refresh() -> None:
            while not done.wait(0.5):
                try:
                    now = consumer.status()
                except sqlite3.Error:  # the state is being created; next tick
                    continue
                status.update(
                    f"{head}: {now.events - start.events:,} events applied, "
                    f"{now.dead_letters - start.dead_letters:,} dead letters, "
                    f"{now.batches - start.batches:,} batches ({until})"
                )

        thread = threading.Thread(target=refresh, name="stream-status", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def print_stream_stats(stats: StreamStats, *, where: str) -> None:
    """The summary table of one consumer run."""
    table = Table(title=f"stream run: {escape(where)}")
    table.add_column("", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_row("events applied", f"{stats.processed:,}")
    table.add_row("duplicates skipped", f"{stats.duplicates_skipped:,}")
    table.add_row("dead letters", f"{stats.dead_lettered:,}")
    table.add_row("batches", f"{stats.batches:,}")
    lag = "" if stats.last_lag_s is None else f"{stats.last_lag_s * 1000:,.0f} ms"
    table.add_row("last batch lag (arrival to online)", lag)
    out.print(table)


def _print_dead_letters(source: EventSource, *, as_json: bool) -> None:
    import dataclasses
    import json

    try:
        with _redis_errors(source):
            letters = source.dead_letters()
    finally:
        source.close()
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(letter) for letter in letters]))
        return
    where = _dead_letter_list(source)
    if not letters:
        out.print(f"no dead letters in {escape(where)}")
        return
    table = Table(title=f"dead letters: {escape(where)}")
    table.add_column("#", no_wrap=True)
    table.add_column("at, position", overflow="fold", max_width=24)
    table.add_column("reason", min_width=30, ratio=1)
    table.add_column("event", overflow="ellipsis", no_wrap=True, max_width=24)
    for letter in letters:
        table.add_row(
            f"{letter.seq}",
            escape(f"{letter.at[:19].replace('T', ' ')}\n{letter.position}"),
            escape(letter.reason),
            escape(letter.raw),
        )
    out.print(table)
    err.print("the events in full: retailml features stream --dead-letters --json")


def stream_once(
    settings: Settings, events: Sequence[Mapping[str, Any]] = ()
) -> tuple[int, StreamStats, str]:
    """Publish ``events`` to the settings' event source, then apply every event there.

    Returns:
        The events published, what the consumer did, and where the source is.
    """
    from retailml.feature_engineering.stream import StreamConsumer, publish_events

    source = stream_source(settings)
    with _redis_errors(source):
        try:
            published = publish_events(events, source) if events else 0
        finally:
            source.close()
        stats = StreamConsumer(settings, source=source).process_available()
    return published, stats, _describe_source(source)


@features_app.command("stream")
def stream(
    source: Annotated[
        Literal["directory", "redis"] | None,
        typer.Option(
            help=(
                "Where events come from: directory (*.jsonl files in <home>/stream/incoming) or "
                "redis (a stream on RETAILML_REDIS_URL). Default: RETAILML_STREAM_SOURCE."
            ),
        ),
    ] = None,
    stream_name: Annotated[
        str | None,
        typer.Option(
            "--stream",
            help="Redis stream key, with --source redis (default: RETAILML_STREAM_NAME).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Most events in one micro-batch.")] = 500,
    max_events: Annotated[
        int | None,
        typer.Option(
            min=1, help="Stop after this many records (applied, duplicates and dead letters)."
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Stop after this many seconds without events (default: run until Ctrl-C).",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Process the events already there, then exit.")
    ] = False,
    dead_letters: Annotated[
        bool,
        typer.Option("--dead-letters", help="List the dead letters with their reason and exit."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's statistics as JSON.")] = (
        False
    ),
) -> None:
    """Keep the real-time features customer_realtime and product_realtime current from events.

    Each event is one transaction line as JSON (the canonical columns and a
    unique event_id). The consumer applies micro-batches exactly once, pushes
    the new values to the online store (read them with 'retailml features
    get --set customer_realtime --entity <id>') and records malformed events
    as dead letters. Ctrl-C or SIGTERM stops it after the current batch.

    Example: retailml features stream --once   (apply what is in <home>/stream/incoming)
    """
    import dataclasses
    import json

    from retailml.feature_engineering.stream import StreamConsumer

    settings = get_settings()
    kind = source or settings.stream_source
    if stream_name is not None and kind != "redis":
        raise typer.BadParameter(
            f"names a Redis stream; the source is {kind!r} (add --source redis)",
            param_hint="--stream",
        )
    if once and idle_timeout is not None:
        raise typer.BadParameter(
            "--once stops as soon as no event is left; leave out --idle-timeout",
            param_hint="--once",
        )
    events = stream_source(settings, kind, stream_name)
    if dead_letters:
        _print_dead_letters(events, as_json=as_json)
        return
    consumer = StreamConsumer(settings, source=events, batch_size=batch_size)
    where = _describe_source(events)
    if once:
        until = "until no event is left"
    elif max_events is not None:
        until = f"up to {max_events:,} events, Ctrl-C to stop"
    elif idle_timeout is not None:
        until = f"until {idle_timeout:g} s without events, Ctrl-C to stop"
    else:
        until = "Ctrl-C to stop"
    with _redis_errors(events), _live_status(consumer, where, until):
        if once and max_events is None:
            stats = consumer.process_available()
        else:
            stats = consumer.run(
                max_events=max_events, idle_timeout_s=0.0 if once else idle_timeout
            )
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(stats)))
    else:
        print_stream_stats(stats, where=where)
    if stats.dead_lettered:
        again = "".join(
            f" {flag} {value}"
            for flag, value in (("--source", source), ("--stream", stream_name))
            if value is not None
        )
        err.print(
            f"[yellow]{stats.dead_lettered:,} dead letter(s)[/yellow]: "
            f"retailml features stream{escape(again)} --dead-letters",
            soft_wrap=True,  # a command to copy, on one line
        )
