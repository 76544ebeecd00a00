"""Reproduce a training run from what it recorded and compare the metrics.

::

    from retailml.training._reproduce import reproduce_run

    outcome = reproduce_run("3f2a...", tolerance=1e-6)
    print(outcome.table())          # recorded vs reproduced, delta, within tolerance
    assert outcome.ok

What is read back from the run (see :mod:`retailml.training._tracking`):
model type, algorithm, every estimator hyperparameter (``hp.*``, after
tuning), validation strategy and splits, target and seed (params); the silver
data version and feature-set versions, package versions, git commit and the
SHA-256 of every input file (tags and ``reproducibility.json``).

How its rows were selected (a config's ``data:`` section: source, feature
set, filter, window, top series, holdout) comes from the training job that
produced the run (``retailml train`` and retraining record one), else from a
training config given by the caller, else from a data file given by the caller.
The run is looked up in the tracking store of the experiment config that job
recorded (``.mlflow/experiments/config.yaml``), else of one the caller gives,
else of the settings.
The data are read at the recorded versions through a snapshot workspace of
links to exactly those files, so newer ingestions or feature builds do not
change them; a version whose files are gone is an error naming them, and a
file whose contents changed since the run is reported (``inputs``) and fails
the reproduction.

The retraining is a new MLflow run in the ``retailml-reproductions``
experiment, tagged ``retailml.reproduces=<run id>``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import mlflow.artifacts
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy import select

from retailml.core.db import PlatformDB, new_id
from retailml.core.db_jobs import TrainingJob
from retailml.core.errors import ConfigError, NotFoundError, StateError, problem
from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace
from retailml.training._experiment_config import ExperimentConfig
from retailml.training._tracking import (
    REPRODUCIBILITY_ARTIFACT,
    ensure_tracking,
    environment_digest,
    git_commit,
    input_digests,
    input_files,
    package_versions,
    source_digest,
)

__all__ = ["InputCheck", "MetricComparison", "Reproduction", "reproduce_run"]

#: Default relative tolerance of a metric (retailml's training is seeded and deterministic).
DEFAULT_TOLERANCE: Final = 1e-6
#: Metrics below this absolute difference always match (float noise around zero).
ABSOLUTE_FLOOR: Final = 1e-9
REPRODUCTIONS_EXPERIMENT: Final = "retailml-reproductions"
REPRODUCES_TAG: Final = "retailml.reproduces"
_DATA_TAG: Final = "retailml.data_version"
_FEATURE_SETS_TAG: Final = "retailml.feature_sets"
_PROGRESS_BAR: Final = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass(frozen=True)
class MetricComparison:
    """One metric: recorded by the run, and reproduced.

    Attributes:
        name: The metric (the cross-validated mean).
        recorded: The run's value.
        reproduced: The retraining's value (None when it produced none).
        delta: ``reproduced - recorded``.
        tolerance: The relative tolerance applied.
        within: Whether ``|delta| <= tolerance * |recorded|`` (or below 1e-9).
    """

    name: str
    recorded: float
    reproduced: float | None
    delta: float | None
    tolerance: float
    within: bool


@dataclass(frozen=True)
class InputCheck:
    """One recorded input (silver parts, a feature set's files) checked against its digests.

    Attributes:
        name: ``silver`` or ``feature_set.<name>``.
        status: ``unchanged``, ``changed`` (a file's contents differ), or
            ``unrecorded`` (the run kept no digests of it).
        changed: Files whose SHA-256 differs from the recorded one (or that are gone).
        added: Files now in the version that the run did not record.
    """

    name: str
    status: str
    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()


@dataclass
class Reproduction:
    """The outcome of :func:`reproduce_run`.

    Attributes:
        run_id: The run reproduced.
        reproduced_run_id: The retraining's MLflow run.
        model_type: Recorded model type.
        algorithm: Recorded algorithm.
        data_source: Where the row selection came from: ``job <id>``,
            ``config``, or ``data file``.
        data_version: The silver data version trained on (recorded).
        feature_set_versions: Feature-set versions trained on (recorded).
        rows: ``(recorded, reproduced)`` rows trained on.
        metrics: One comparison per recorded metric.
        inputs: Digest checks of the recorded inputs.
        warnings: Environment and code differences (package versions, git commit).
    """

    run_id: str
    reproduced_run_id: str | None
    model_type: str
    algorithm: str
    data_source: str
    data_version: str | None
    feature_set_versions: dict[str, str]
    rows: tuple[int | None, int]
    metrics: list[MetricComparison] = field(default_factory=list)
    inputs: list[InputCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def metrics_match(self) -> bool:
        """Every recorded metric reproduced within its tolerance."""
        return all(m.within for m in self.metrics)

    @property
    def data_changed(self) -> bool:
        """A recorded input file changed, or the row count differs."""
        recorded, reproduced = self.rows
        return any(i.status == "changed" for i in self.inputs) or (
            recorded is not None and recorded != reproduced
        )

    @property
    def ok(self) -> bool:
        """Same data, and every metric within tolerance."""
        return self.metrics_match and not self.data_changed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["rows"] = {"recorded": self.rows[0], "reproduced": self.rows[1]}
        data.update(ok=self.ok, metrics_match=self.metrics_match, data_changed=self.data_changed)
        return data

    def table(self) -> str:
        """The metric comparison as plain text."""
        lines = [f"{'metric':<28}{'recorded':>16}{'reproduced':>16}{'delta':>14}  ok"]
        for m in self.metrics:
            shown = "-" if m.reproduced is None else f"{m.reproduced:.6g}"
            delta = "-" if m.delta is None else f"{m.delta:+.3g}"
            lines.append(
                f"{m.name:<28}{m.recorded:>16.6g}{shown:>16}{delta:>14}  "
                f"{'yes' if m.within else 'NO'}"
            )
        return "\n".join(lines)


# --- reading the run --------------------------------------------------------------------------


def _decode(text: str) -> Any:
    """A param as the trainer logged it: JSON for non-strings, strings as they are."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _get_run(client: MlflowClient, run_id: str) -> Any:
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise NotFoundError(
            problem(
                "the id of an MLflow run in this workspace's tracking store",
                f"{run_id!r} ({exc.error_code})",
                "copy the run id from `retailml train --json` or the MLflow UI, "
                "and check RETAILML_HOME / RETAILML_MLFLOW_TRACKING_URI, or pass the "
                "experiment config it was trained with (--experiment-config)",
                subject="run_id",
            )
        ) from exc


def _recorded_digests(run_id: str) -> dict[str, dict[str, str | None]] | None:
    bar = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"  # no download bar in the CLI's output
    try:
        record = mlflow.artifacts.load_dict(f"runs:/{run_id}/{REPRODUCIBILITY_ARTIFACT}")
    except (MlflowException, OSError):
        return None
    finally:
        if bar is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = bar
    inputs = record.get("inputs")
    return inputs if isinstance(inputs, dict) and "error" not in inputs else None


def _job_of(db: PlatformDB, run_id: str) -> TrainingJob | None:
    """The succeeded training job whose outcome is the run, if any."""
    with db.session() as session:
        jobs = list(
            session.scalars(
                select(TrainingJob)
                .where(TrainingJob.status == "succeeded")
                .order_by(TrainingJob.created_at.desc())
            )
        )
    return next((job for job in jobs if (job.outcome or {}).get("run_id") == run_id), None)


def _job_data(job: TrainingJob) -> tuple[str, dict[str, Any]]:
    """``(job id, data section)`` of a training job."""
    from retailml.training._jobs import config_from_inputs

    inputs = dict(job.inputs or {})
    try:
        data = dict(config_from_inputs(inputs).get("data") or {})
    except (ConfigError, NotFoundError):
        # The job's config file is gone: its recorded data keys are enough.
        recorded = dict(inputs.get("data") or {})
        data = {k: v for k, v in recorded.items() if v is not None and k != "data_version"}
        if data.get("source") == "path":
            data["source"] = "file"
    return job.id, data


def _tracking_settings(
    settings: Settings, job: TrainingJob | None, given: ExperimentConfig | None
) -> Settings:
    """The settings whose tracking store holds the run.

    A run's training job decides the store: the experiment config it recorded,
    or none (the settings' store). Only for a run no job recorded does the
    given experiment config decide. An explicit tracking URI setting
    (``RETAILML_MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_URI``) wins, as it
    did for ``retailml train``.
    """
    if job is not None:
        recorded = (job.inputs or {}).get("experiment")
        experiment = ExperimentConfig.from_inputs(recorded) if recorded else None
    else:
        experiment = given
    if experiment is None:
        return settings
    return experiment.settings_for(settings)[0]


# --- the snapshot workspace -------------------------------------------------------------------


@contextlib.contextmanager
def _snapshot(
    settings: Settings,
    source: str,
    data_version: str | None,
    feature_sets: Mapping[str, str],
) -> Iterator[Settings]:
    """Settings of a workspace holding exactly the recorded versions (links to their files).

    Raises:
        NotFoundError: when a recorded version is unknown or its files are gone.
    """
    files = input_files(data_version, feature_sets, settings)
    if source == "silver" and data_version:
        parts = files.get("silver")
        if parts is None:
            raise NotFoundError(
                problem(
                    "the silver data version the run trained on, recorded in this workspace",
                    f"{data_version!r}, unknown to the data_versions table",
                    "reproduce in the workspace that trained it (RETAILML_HOME)",
                    subject="data_version",
                )
            )
        gone = [p.name for p in parts if not p.is_file()]
        if gone:
            raise NotFoundError(
                problem(
                    f"every silver part of data version {data_version[:12]}",
                    f"{len(gone)} gone: {', '.join(gone)}",
                    "restore the files (TrainingRecovery.restore_training_data, a backup) "
                    "or re-ingest the same source files",
                    subject="data_version",
                )
            )
    workspace = Workspace.from_settings(settings)
    for name, version in feature_sets.items():
        if source == "feature_set" and not files.get(f"feature_set.{name}"):
            raise NotFoundError(
                problem(
                    f"version {version} of feature set {name!r}, the one the run trained on",
                    f"nothing at {str(workspace.features / name / version)!r}",
                    "rebuild it from the same silver data (retailml features build) "
                    "or restore the directory",
                    subject=f"feature set {name}",
                )
            )
    root = workspace.tmp / f"reproduce-{new_id()[:12]}"
    snapshot = Workspace(root)
    try:
        if source == "silver":
            snapshot.transactions.mkdir(parents=True)
            for part in files.get("silver", []):
                (snapshot.transactions / part.name).symlink_to(part.resolve())
            if not data_version:  # nothing recorded: the current silver parts
                for part in sorted(workspace.transactions.glob("part-*.parquet")):
                    (snapshot.transactions / part.name).symlink_to(part.resolve())
        for name, version in feature_sets.items():
            directory = snapshot.features / name
            directory.mkdir(parents=True)
            original = workspace.features / name / version
            if original.is_dir():
                (directory / version).symlink_to(original.resolve(), target_is_directory=True)
                (directory / "_latest").write_text(version + "\n", encoding="utf-8")
        yield settings.model_copy(update={"home": root})
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_inputs(
    recorded: Mapping[str, Mapping[str, str | None]] | None,
    data_version: str | None,
    feature_sets: Mapping[str, str],
    settings: Settings,
    source: str,
) -> list[InputCheck]:
    """Digest checks of the inputs the rows were read from (a feature set's silver
    version is not one: the feature files are)."""
    current = input_digests(data_version, feature_sets, settings)
    checks = []
    for name in sorted(current):
        if source != "frame" and not name.startswith(
            "feature_set" if source == "feature_set" else source
        ):
            continue
        now = current[name]
        if recorded is None or name not in recorded:
            checks.append(InputCheck(name, "unrecorded"))
            continue
        then = recorded[name]
        changed = tuple(sorted(f for f, digest in then.items() if now.get(f) != digest))
        added = tuple(sorted(set(now) - set(then)))
        status = "changed" if changed or added else "unchanged"
        checks.append(InputCheck(name, status, changed, added))
    return checks


# --- the reproduction -------------------------------------------------------------------------


def _tolerance_of(name: str, default: float, per_metric: Mapping[str, float]) -> float:
    return float(per_metric.get(name, default))


def _compare(
    recorded: Mapping[str, float],
    reproduced: Mapping[str, float],
    default: float,
    per_metric: Mapping[str, float],
) -> list[MetricComparison]:
    out = []
    for name in sorted(recorded):
        if name.startswith(("fold_", "best_")):
            continue
        before = float(recorded[name])
        tolerance = _tolerance_of(name, default, per_metric)
        value = reproduced.get(name)
        if value is None or not math.isfinite(float(value)):
            out.append(MetricComparison(name, before, None, None, tolerance, False))
            continue
        after = float(value)
        delta = after - before
        within = abs(delta) <= max(tolerance * abs(before), ABSOLUTE_FLOOR)
        out.append(MetricComparison(name, before, after, delta, tolerance, within))
    return out


def _warnings(tags: Mapping[str, str]) -> list[str]:
    found = []
    now = package_versions()
    for key, version in sorted(tags.items()):
        if not key.startswith("retailml.version."):
            continue
        package = key.removeprefix("retailml.version.")
        current = now.get(package)
        if current != version:
            found.append(f"{package}: the run used {version}, installed now {current or 'none'}")
    recorded_env = tags.get("retailml.environment_digest")
    if recorded_env and recorded_env != environment_digest() and not found:
        found.append("installed distributions differ from the run's (environment digest)")
    commit = tags.get("retailml.git_commit")
    current_commit = git_commit()
    if commit and current_commit and commit != current_commit:
        found.append(
            f"git commit: the run used {commit[:12]}, the checkout is {current_commit[:12]}"
        )
    elif not commit:
        found.append("the run recorded no git commit (trained outside a git checkout)")
    recorded_source = tags.get("retailml.source_digest")
    if recorded_source and recorded_source != source_digest():
        found.append(
            "retailml's source code differs from the run's (an edit or another release): "
            "metric differences may come from the code, not the data"
        )
    elif tags.get("retailml.git_dirty") == "true":
        found.append("the run was trained with uncommitted changes: its commit is incomplete")
    return found


def _frame_for(
    data: pd.DataFrame | None,
    config: Mapping[str, Any] | None,
    job: tuple[str, dict[str, Any]] | None,
    run_id: str,
) -> tuple[str, dict[str, Any] | None]:
    if data is not None:
        return "data file", None
    if job is not None:
        return f"job {job[0]}", job[1]
    if config is not None:
        return "config", dict(config.get("data") or {})
    raise StateError(
        problem(
            "a record of how the run's training rows were selected (a training job)",
            f"no training job recorded run {run_id!r} (trained by the demo or the Python API)",
            "pass the training config it was trained with (--config configs/<model>.yaml) "
            "or its training data (--data FILE)",
            subject="reproduce",
        )
    )


def reproduce_run(
    run_id: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    metric_tolerances: Mapping[str, float] | None = None,
    config: Mapping[str, Any] | None = None,
    data: pd.DataFrame | None = None,
    settings: Settings | None = None,
    experiment_config: ExperimentConfig | None = None,
) -> Reproduction:
    """Retrain a run from its recorded inputs and compare the metrics.

    Args:
        run_id: The MLflow run to reproduce.
        tolerance: Relative tolerance of every metric (a fraction of the recorded value).
        metric_tolerances: ``metric -> tolerance`` overriding ``tolerance``.
        config: A training config whose ``data:`` section selects the rows,
            for runs no training job recorded.
        data: The training rows themselves, for runs trained on a DataFrame.
        settings: retailml settings (default the process settings).
        experiment_config: The experiment config (``.mlflow/experiments/config.yaml``)
            whose tracking store holds the run, for runs no training job
            recorded; a job's recorded experiment config comes first.

    Returns:
        The :class:`Reproduction` (``.ok`` when the data and metrics match).

    Raises:
        NotFoundError: for an unknown run, or a recorded data version whose files are gone.
        StateError: when the run records no way to select its rows and none was given.
        ConfigError: for a run that is not a retailml training run, or a bad tolerance.
    """
    from retailml.training._data import load_training_data
    from retailml.training.model_trainer import ModelTrainer

    per_metric = dict(metric_tolerances or {})
    for name, value in [("tolerance", tolerance), *per_metric.items()]:
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ConfigError(
                problem("a tolerance >= 0", repr(value), "pass e.g. 1e-6 or 0.01", subject=name)
            )
    settings = settings or get_settings()
    db = PlatformDB.from_settings(settings)
    try:
        training_job = _job_of(db, run_id)
    finally:
        db.dispose()
    settings = _tracking_settings(settings, training_job, experiment_config)
    client = MlflowClient(ensure_tracking(settings))
    run = _get_run(client, run_id)
    params = {k: _decode(v) for k, v in run.data.params.items()}
    tags = dict(run.data.tags)
    if "model_type" not in params or "algorithm" not in params:
        raise ConfigError(
            problem(
                "a run logged by retailml's trainer (params model_type, algorithm, hp.*)",
                f"run {run_id!r} with params {sorted(params)[:8]}",
                "pass the id of a training run (retailml train --json prints it)",
                subject="run_id",
            )
        )
    data_version = tags.get(_DATA_TAG)
    feature_sets: dict[str, str] = json.loads(tags.get(_FEATURE_SETS_TAG) or "{}")
    job = _job_data(training_job) if data is None and training_job is not None else None
    data_source, section = _frame_for(data, config, job, run_id)
    source = str((section or {}).get("source", "feature_set")) if section is not None else "frame"
    target = params.get("target")
    inputs = _check_inputs(_recorded_digests(run_id), data_version, feature_sets, settings, source)
    if data is not None:
        frame = data
    else:
        with _snapshot(settings, source, data_version, feature_sets) as snapshot:
            frame = load_training_data(section, target=target, settings=snapshot).train
    hyperparameters = {k.removeprefix("hp."): v for k, v in params.items() if k.startswith("hp.")}
    trainer = ModelTrainer(
        model_type=str(params["model_type"]),
        algorithm=str(params["algorithm"]),
        hyperparameters=hyperparameters,
        validation_strategy=str(params["validation_strategy"]),
        n_splits=int(params.get("n_splits", 5)),
        experiment_name=REPRODUCTIONS_EXPERIMENT,
        random_state=int(params["seed"]) if params.get("seed") is not None else None,
        settings=settings,
    )
    name = str(tags.get("retailml.model_name") or f"{params['model_type']}")
    result = trainer.train_sync(
        frame,
        target=target,
        model_name=f"{name}.reproduction",
        data_version=data_version,
        feature_set_versions=feature_sets or None,
    )
    if result.run_id:
        client.set_tag(result.run_id, REPRODUCES_TAG, run_id)
    recorded_rows = params.get("n_rows")
    return Reproduction(
        run_id=run_id,
        reproduced_run_id=result.run_id,
        model_type=str(params["model_type"]),
        algorithm=str(params["algorithm"]),
        data_source=data_source,
        data_version=data_version,
        feature_set_versions=feature_sets,
        rows=(int(recorded_rows) if recorded_rows is not None else None, int(result.n_rows)),
        metrics=_compare(run.data.metrics, result.metrics, float(tolerance), per_metric),
        inputs=inputs,
        warnings=_warnings(tags),
    )
