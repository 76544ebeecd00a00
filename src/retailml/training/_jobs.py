"""Training jobs: a training config becomes a recorded job that runs, succeeds or fails for real.

A job's ``inputs`` (shared by ``retailml train``, retraining and recovery)::

    {"model_name", "model_type", "algorithm", "hyperparameters", "target",
     "validation_strategy", "n_splits", "seed",
     "data": {"source": "silver" | "path" | "feature_set", "path": str | None,
              "window": str | None, "data_version": str | None,
              # optional, as in a training config's data: section
              "name", "filter", "top_series", "holdout",
              # optional: the whole data: section (retrain jobs), used as is
              "spec": {...}},
     "config": path or None,          # tuning: and validation: come from it
     "register": bool,
     "resources": {"memory_mb": int | None, "cpus": int | None},
     # optional: an experiment config (.mlflow/experiments/config.yaml), see
     # retailml.training._experiment_config
     "experiment": {"path": str | None, "config": {...}}}

Explicit inputs win over the config file's keys, so a recorded job trains the
same way even after its config file changes (except ``tuning``/``validation``).

``data.data_version`` pins silver transactions to a recorded version (see
:class:`~retailml.core.db.DataVersion`): the job reads exactly the silver
parts of that version, through a read-only snapshot workspace of links to
them, so later ingestions (or a damaged newer part) do not change what it
trains on.

``resources.memory_mb`` runs the training in a child process whose address
space is limited to that many MiB (``RLIMIT_AS``, set after the interpreter
and libraries are loaded, before the data is read), so running out is a real
``MemoryError`` recorded on the job; ``resources.cpus`` becomes the
estimator's ``n_jobs`` when it has one. The child's peak address space is
recorded in the outcome (``peak_address_space_mb``), which is what
:meth:`~retailml.training.recovery.TrainingRecovery.adjust_training_resources`
sizes a retry from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from retailml.core.db import DataVersion, IngestionRun, PlatformDB, new_id
from retailml.core.errors import ConfigError, NotFoundError, problem
from retailml.core.io import atomic_write_text, read_yaml_mapping
from retailml.core.jobs import (
    JobRecord,
    fail_job,
    finish_job,
    get_job,
    heartbeat,
    start_job,
)
from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace

__all__ = [
    "CONFIG_KEYS",
    "LATEST",
    "SilverVersion",
    "TrainedModel",
    "config_from_inputs",
    "default_output_dir",
    "inputs_from_config",
    "job_log",
    "load_training_config",
    "run_training_job",
    "silver_versions",
    "train_config",
]

#: Keys of a training config (configs/<model type>.yaml).
CONFIG_KEYS: Final = (
    "model_type",
    "algorithm",
    "model_name",
    "target",
    "hyperparameters",
    "validation_strategy",
    "n_splits",
    "tuning",
    "data",
    "validation",
)
LATEST: Final = "latest"
#: Keys of a config's ``data:`` section a job records beside source/path/window/data_version.
_DATA_EXTRAS: Final = ("name", "filter", "top_series", "holdout")
#: Seconds between heartbeats while a child process trains.
_HEARTBEAT_S: Final = 5.0

Progress = Callable[[str], None]


def default_output_dir(settings: Settings) -> Path:
    """``<home>/artifacts/models``."""
    return Path(settings.home) / "artifacts" / "models"


def load_training_config(path: Path) -> dict[str, Any]:
    """Read and check a training config file.

    Raises:
        ConfigError: for an unreadable file, unknown keys or a missing model_type.
    """
    config = read_yaml_mapping(
        path,
        subject="--config",
        shape="training settings: model_type, algorithm, hyperparameters, data, ... "
        "(see configs/sales_forecast.yaml)",
    )
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            problem(
                f"keys among {list(CONFIG_KEYS)}",
                f"unknown {unknown}",
                "rename or drop them",
                subject=str(path),
            )
        )
    if "model_type" not in config:
        raise ConfigError(
            problem(
                "a model_type", "none", "add e.g. model_type: sales_forecast", subject=str(path)
            )
        )
    return config


# --- inputs <-> config ----------------------------------------------------------------------


def inputs_from_config(
    config: Mapping[str, Any],
    *,
    config_path: Path | None = None,
    data_window: str | None = None,
    validation_strategy: str | None = None,
    seed: int | None = None,
    register: bool = False,
    memory_mb: int | None = None,
    cpus: int | None = None,
) -> dict[str, Any]:
    """A job's ``inputs`` (module docstring) from a training config and CLI overrides."""
    data = dict(config.get("data") or {})
    source = str(data.get("source", "feature_set"))
    recorded: dict[str, Any] = {
        "source": "path" if source == "file" else source,
        "path": data.get("path"),
        "window": data_window or data.get("window"),
        "data_version": None,
    }
    recorded.update({key: data[key] for key in _DATA_EXTRAS if key in data})
    return {
        "model_name": str(config.get("model_name") or config.get("model_type") or "model"),
        "model_type": config.get("model_type"),
        "algorithm": config.get("algorithm"),
        "hyperparameters": dict(config.get("hyperparameters") or {}),
        "target": config.get("target"),
        "validation_strategy": validation_strategy or config.get("validation_strategy"),
        "n_splits": config.get("n_splits"),
        "seed": seed,
        "data": recorded,
        "config": str(config_path.resolve()) if config_path is not None else None,
        "register": register,
        "resources": {"memory_mb": memory_mb, "cpus": cpus},
    }


def config_from_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The training config a job's inputs describe (config file overlaid with the inputs)."""
    path = inputs.get("config")
    config = dict(load_training_config(Path(str(path)))) if path else {}
    for key in (
        "model_type",
        "algorithm",
        "model_name",
        "target",
        "validation_strategy",
        "n_splits",
    ):
        if inputs.get(key) is not None:
            config[key] = inputs[key]
    if inputs.get("hyperparameters") is not None:
        config["hyperparameters"] = dict(inputs["hyperparameters"])
    recorded = dict(inputs.get("data") or {})
    data = dict(config.get("data") or {})
    source = recorded.get("source")
    spec = recorded.get("spec")
    if isinstance(spec, Mapping):
        # A retrain job records the exact data: section it resolved as its "spec".
        data = dict(spec)
    elif source == "path":
        data = {k: v for k, v in data.items() if k != "name"}
        data.update(source="file", path=recorded.get("path"))
    elif source == "silver":
        data = {k: v for k, v in data.items() if k not in ("name", "path")}
        data["source"] = "silver"
    elif source is not None:
        data["source"] = source
    if recorded.get("window"):
        data["window"] = recorded["window"]
    data.update({key: recorded[key] for key in _DATA_EXTRAS if key in recorded})
    config["data"] = data
    if "model_type" not in config:
        raise ConfigError(
            problem(
                "a model_type in the job's inputs or its config file",
                "none",
                "record the job with inputs['model_type'] or inputs['config']",
                subject="training job",
            )
        )
    return config


# --- silver data versions -------------------------------------------------------------------


@dataclass(frozen=True)
class SilverVersion:
    """A recorded version of silver transactions and the part files that make it up."""

    version: str
    created_at: Any
    row_count: int
    parts: tuple[Path, ...]
    consistent: bool


def silver_versions(db: PlatformDB, settings: Settings) -> list[SilverVersion]:
    """Every recorded silver version, oldest first, with the parts each one holds.

    Version *n* holds the parts of the ingestion runs of versions 1..n; a
    version is ``consistent`` when the digest of those runs' source hashes is
    the recorded version (how :mod:`retailml.data.ingest` derives it).
    """
    from retailml.data.ingest import SILVER_TABLE

    transactions = Workspace.from_settings(settings).transactions
    with db.session() as session:
        rows = session.execute(
            select(DataVersion, IngestionRun.source_hash)
            .join(IngestionRun, DataVersion.ingestion_run_id == IngestionRun.id, isouter=True)
            .where(DataVersion.table_name == SILVER_TABLE)
            .order_by(DataVersion.id)
        ).all()
        versions: list[SilverVersion] = []
        hashes: list[str] = []
        parts: list[Path] = []
        for version, source_hash in rows:
            if version.ingestion_run_id is not None and source_hash is not None:
                hashes.append(str(source_hash))
                parts.append(transactions / f"part-{version.ingestion_run_id}.parquet")
            digest = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
            versions.append(
                SilverVersion(
                    version=version.version,
                    created_at=version.created_at,
                    row_count=version.row_count,
                    parts=tuple(parts),
                    consistent=digest == version.version,
                )
            )
    return versions


def damaged_parts(parts: tuple[Path, ...] | list[Path]) -> dict[Path, str]:
    """``part -> why`` for every part that is missing or does not read back whole."""
    import pyarrow.parquet as pq

    damaged: dict[Path, str] = {}
    for part in parts:
        if not part.is_file():
            damaged[part] = "missing"
            continue
        try:
            pq.read_table(part)
        except Exception as exc:  # any failure to read back is damage
            damaged[part] = f"{type(exc).__name__}: {exc}"
    return damaged


@contextlib.contextmanager
def _silver_snapshot(
    db: PlatformDB, settings: Settings, version: str
) -> Iterator[tuple[Settings, SilverVersion]]:
    """Settings of a read-only workspace whose silver is exactly ``version``'s parts."""
    found = next((v for v in silver_versions(db, settings) if v.version == version), None)
    if found is None or not found.consistent:
        raise NotFoundError(
            problem(
                "a recorded, consistent version of silver transactions",
                repr(version),
                "pick one of the versions in the data_versions table "
                "(TrainingRecovery.restore_training_data picks an intact one)",
                subject="data_version",
            )
        )
    root = Workspace.from_settings(settings).tmp / f"silver-{version[:12]}-{new_id()[:8]}"
    target = Workspace(root).transactions
    target.mkdir(parents=True)
    try:
        for part in found.parts:
            (target / part.name).symlink_to(part.resolve())
        yield settings.model_copy(update={"home": root}), found
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- training -------------------------------------------------------------------------------


@dataclass
class TrainedModel:
    """A trained, saved model and the data it came from."""

    result: Any
    directory: Path
    data_source: str
    data_version: str | None
    n_train_rows: int


def _point_latest(output_dir: Path, name: str) -> Path:
    """Make ``<output_dir>/latest`` a symlink to ``name``, replaced atomically."""
    latest = output_dir / LATEST
    staging = output_dir / f".{LATEST}.{os.getpid()}.tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(name, target_is_directory=True)
    staging.replace(latest)
    return latest


def _with_n_jobs(model_type: str, algorithm: str | None, params: dict[str, Any], cpus: int) -> None:
    from retailml.training._registry import make_estimator
    from retailml.training._tasks import DEFAULT_ALGORITHMS

    try:
        probe = make_estimator(model_type, algorithm or DEFAULT_ALGORITHMS[model_type])
    except Exception:  # unknown names are reported by the trainer itself
        return
    if "n_jobs" in probe.get_params():
        params["n_jobs"] = int(cpus)


def train_config(
    config: Mapping[str, Any],
    *,
    output_dir: Path | None,
    settings: Settings,
    data_window: str | None = None,
    validation_strategy: str | None = None,
    n_trials: int | None = None,
    seed: int | None = None,
    data_version: str | None = None,
    cpus: int | None = None,
    db: PlatformDB | None = None,
    progress: Progress | None = None,
    experiment_name: str | None = None,
) -> TrainedModel:
    """Train the model a config describes and save it under ``output_dir/<model_name>``.

    Beside the model: ``test.parquet`` (the config's ``data.holdout``) and
    ``validation.json`` (its ``validation:`` section); ``output_dir/latest``
    points at it.

    Args:
        data_version: Train on exactly this version of silver transactions.
        cpus: The estimator's ``n_jobs`` (when it has one).
        progress: Called with one line about what is trained on what.
        experiment_name: The MLflow experiment (default the model type).
    """
    from retailml.data.ingest import SILVER_TABLE
    from retailml.training._data import load_training_data
    from retailml.training.model_trainer import ModelTrainer

    tuning = dict(config.get("tuning") or {})
    if n_trials is not None:
        tuning["n_trials"] = n_trials
    hyperparameters = dict(config.get("hyperparameters") or {})
    model_type = str(config["model_type"])
    if cpus is not None:
        _with_n_jobs(model_type, config.get("algorithm"), hyperparameters, cpus)
    trainer = ModelTrainer(
        model_type=model_type,
        algorithm=config.get("algorithm"),
        hyperparameters=hyperparameters,
        validation_strategy=validation_strategy or config.get("validation_strategy"),
        n_splits=int(config.get("n_splits") or 5),
        tuning=tuning or None,
        random_state=seed,
        experiment_name=experiment_name,
        settings=settings,
    )
    target = config.get("target")
    data_config = dict(config.get("data") or {})
    silver = str(data_config.get("source", "feature_set")) == "silver"
    own_db = db is None and silver
    platform = PlatformDB.from_settings(settings) if own_db else db
    try:
        if silver and data_version is not None:
            assert platform is not None
            with _silver_snapshot(platform, settings, data_version) as (snapshot, _):
                data = load_training_data(
                    data_config, target=target, window=data_window, settings=snapshot
                )
            version: str | None = data_version
        else:
            data = load_training_data(
                data_config, target=target, window=data_window, settings=settings
            )
            version = data.data_version
            if silver and platform is not None:
                latest = platform.latest_data_version(SILVER_TABLE)
                version = latest.version if latest is not None else None
    finally:
        if own_db and platform is not None:
            platform.dispose()
    if progress is not None:
        progress(
            f"training {trainer.model_type} ({trainer.algorithm}) on {len(data.train):,} rows "
            f"of {data.source}{f' @ {version[:12]}' if version else ''}; "
            f"{trainer.validation_strategy} x{trainer.n_splits}"
        )
    result = trainer.train_sync(
        data.train,
        target=target,
        model_name=config.get("model_name"),
        data_version=version,
        feature_set_versions=data.feature_set_versions,
    )
    output = output_dir or default_output_dir(settings)
    directory = result.save(output / result.model_name)
    if data.test is not None and not data.test.empty:
        data.test.to_parquet(directory / "test.parquet", index=False)
    atomic_write_text(
        directory / "validation.json",
        json.dumps(dict(config.get("validation") or {}), indent=2) + "\n",
    )
    _point_latest(output, result.model_name)
    return TrainedModel(result, directory, data.source, version, len(data.train))


def _outcome(trained: TrainedModel) -> dict[str, Any]:
    result = trained.result

    def number(value: Any) -> float | None:
        value = float(value)
        return value if math.isfinite(value) else None

    return {
        "metrics": {name: number(value) for name, value in result.metrics.items()},
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "model_dir": str(trained.directory),
        "model_name": result.model_name,
        "algorithm": result.algorithm,
        "hyperparameters": json.loads(json.dumps(result.hyperparameters, default=str)),
        "data_source": trained.data_source,
        "data_version": trained.data_version,
        "n_rows": trained.n_train_rows,
        "training_seconds": round(float(result.training_seconds), 3),
    }


def _train_inputs(
    inputs: Mapping[str, Any],
    settings: Settings,
    output_dir: Path | None,
    db: PlatformDB | None,
    progress: Progress | None,
) -> dict[str, Any]:
    from retailml.training._experiment_config import (
        ExperimentConfig,
        record_run,
        start_experiment,
    )

    config = config_from_inputs(inputs)
    data = dict(inputs.get("data") or {})
    resources = dict(inputs.get("resources") or {})
    experiment = (
        ExperimentConfig.from_inputs(inputs["experiment"]) if inputs.get("experiment") else None
    )
    warn = progress or _log_warning
    seed = inputs.get("seed")
    if experiment is not None:
        settings, _ = experiment.settings_for(settings)
        start_experiment(experiment, settings, warn)
        if seed is None:
            seed = experiment.seed
    trained = train_config(
        config,
        output_dir=output_dir,
        settings=settings,
        seed=seed,
        n_trials=inputs.get("n_trials"),
        data_version=data.get("data_version"),
        cpus=resources.get("cpus"),
        db=db,
        progress=progress,
        experiment_name=experiment.name if experiment is not None else None,
    )
    outcome = _outcome(trained)
    if experiment is not None:
        record_run(experiment, str(trained.result.run_id))
        outcome["experiment"] = experiment.name
    return outcome


def _log_warning(message: str) -> None:
    import logging

    logging.getLogger(__name__).warning("%s", message)


def run_training_job(
    db: PlatformDB,
    job_id: str,
    *,
    settings: Settings | None = None,
    output_dir: Path | None = None,
    raise_errors: bool = False,
    progress: Progress | None = None,
) -> JobRecord:
    """Run a recorded job: train as its inputs say, record the outcome or the real failure.

    With ``resources.memory_mb`` the training runs in a child process with
    that address-space limit (module docstring); otherwise in this process.

    Args:
        raise_errors: Re-raise the training's exception after recording it
            (in-process runs; the CLI shows it as its error line).

    Returns:
        The finished job (``succeeded`` or ``failed``).
    """
    settings = settings or get_settings()
    job = start_job(db, job_id)
    memory_mb = (job.inputs.get("resources") or {}).get("memory_mb")
    if memory_mb:
        return _run_in_child(db, job, settings, output_dir, int(memory_mb))
    try:
        with _heartbeats(db, job_id):
            outcome = _train_inputs(job.inputs, settings, output_dir, db, progress)
    except Exception as exc:
        fail_job(db, job_id, exc)
        if raise_errors:
            raise
        return get_job(db, job_id)
    return finish_job(db, job_id, outcome)


@contextlib.contextmanager
def _heartbeats(db: PlatformDB, job_id: str) -> Iterator[None]:
    """Refresh the job's heartbeat from a background thread while the block runs."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(_HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is not a failed training
                heartbeat(db, job_id)

    thread = threading.Thread(target=beat, name=f"retailml-heartbeat-{job_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# --- the memory-limited child ---------------------------------------------------------------


def _address_space_mb(field: str) -> float | None:
    """``VmPeak`` / ``VmSize`` of this process in MiB (Linux), or None."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def _child_main(
    settings: Settings, database_url: str, job_id: str, output_dir: Path | None, memory_mb: int
) -> None:  # pragma: no cover - runs in the child process (covered through its job records)
    # Load the libraries before the limit: it is meant for the data and the training.
    import pyarrow.dataset  # noqa: F401

    import retailml.training._data
    import retailml.training.model_trainer  # noqa: F401

    # The child's own output goes to the job's log: the parent quotes its end if
    # the child dies without recording a failure (glibc aborts, signals).
    log = job_log(settings, job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    db = PlatformDB(database_url, busy_timeout_s=settings.db_busy_timeout_s)
    job = get_job(db, job_id)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    baseline = _address_space_mb("VmSize")
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard < 0 else min(limit, hard), hard))
    try:
        outcome = _train_inputs(job.inputs, settings, output_dir, db, None)
    except BaseException as exc:
        # Lift the limit first: recording the failure needs memory too.
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        fail_job(
            db,
            job_id,
            exc,
            outcome={"memory_limit_mb": memory_mb, "baseline_address_space_mb": baseline},
        )
        db.dispose()
        os._exit(3)
    peak = _address_space_mb("VmPeak")
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    outcome.update(
        memory_limit_mb=memory_mb,
        baseline_address_space_mb=baseline,
        peak_address_space_mb=peak,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    finish_job(db, job_id, outcome)
    db.dispose()


def job_log(settings: Settings, job_id: str) -> Path:
    """``<home>/logs/jobs/<job_id>.log``: what a memory-limited job's process wrote."""
    return Workspace.from_settings(settings).root / "logs" / "jobs" / f"{job_id}.log"


def _log_tail(path: Path, limit: int = 2000) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        return text[-limit:]
    return ""


def _context() -> Any:
    # A fork server: children start from a clean, thread-free process that
    # already imported the trainer, so a limited child starts in well under a second.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["retailml.training._data", "retailml.training.model_trainer"])
    return ctx


def _run_in_child(
    db: PlatformDB,
    job: JobRecord,
    settings: Settings,
    output_dir: Path | None,
    memory_mb: int,
) -> JobRecord:
    process = _context().Process(
        target=_child_main,
        args=(settings, db.url, job.id, output_dir, memory_mb),
        name=f"retailml-train-{job.id[:8]}",
        daemon=False,
    )
    process.start()
    while True:
        process.join(_HEARTBEAT_S)
        if process.exitcode is not None:
            break
        heartbeat(db, job.id)
    record = get_job(db, job.id)
    if record.status == "running":
        # The child died before it could record anything (a signal, or a crash in C).
        code = process.exitcode or 0
        if code < 0:
            name = signal.Signals(-code).name
            reason = f"the training process (memory limit {memory_mb} MiB) was killed by {name}"
        else:
            reason = f"the training process (memory limit {memory_mb} MiB) exited with {code}"
        tail = _log_tail(job_log(settings, job.id))
        if tail:
            reason += f"; its last output: {tail}"
        record = fail_job(
            db,
            job.id,
            ChildProcessError(reason),
            outcome={"memory_limit_mb": memory_mb, "exit_code": code},
        )
    return record
