"""MLflow tracking: where runs go, what a training run records, and the pyfunc model.

Where runs go
-------------
``RETAILML_MLFLOW_TRACKING_URI`` names a tracking server or database; left
empty, runs go to ``sqlite:///<home>/mlflow.db`` with artifacts under
``<home>/mlartifacts``. A tracking URI the user already chose
(``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``) always wins:
:func:`ensure_tracking` only fills the gap, and never switches stores while a
run is active. Experiments retailml creates get their artifact location in
the workspace; an experiment created directly with ``mlflow.set_experiment``
gets MLflow's default location. An experiment config
(:mod:`retailml.training._experiment_config`) sits in between: its
``tracking_uri`` wins over the workspace default, the two settings above win
over it, and its ``artifact_store`` is the location of a new experiment.

What a training run records
---------------------------
Params: model type, algorithm, every estimator hyperparameter, validation
strategy and splits, target, seed, row count. Metrics: each fold's metrics
as ``fold_<metric>`` with the fold index as the step, and their mean under
the metric's own name. Tags: ``retailml.model_name``, the git commit of the
working directory (when it is a git checkout), the data and feature-set
versions given to the trainer, and the Python and package versions. The
model is logged as an MLflow ``pyfunc`` model with a signature and an input
example (:class:`RetailMLModel`), loadable with ``mlflow.pyfunc.load_model``.

The guide's ``reproducibility`` block
-------------------------------------
``seed`` is the ``seed`` param; ``environment`` the ``retailml.version.*``
tags, the model's pinned ``requirements.txt`` and ``retailml.environment_digest``
(every installed distribution); ``code_version`` the ``retailml.git_commit``
tag with ``retailml.git_dirty`` (uncommitted changes make the commit an
incomplete record) and ``retailml.source_digest`` (retailml's own source files,
which tells uncommitted edits apart). The data are the ``retailml.data_version`` and
``retailml.feature_set.*`` tags plus, in the run's ``reproducibility.json``
artifact, the SHA-256 of every file of those versions (silver parts, feature
files), so ``retailml reproduce`` can tell a changed or missing file from a
changed model.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import math
import platform
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel
from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace

__all__ = [
    "REPRODUCIBILITY_ARTIFACT",
    "RetailMLModel",
    "ensure_tracking",
    "environment",
    "environment_digest",
    "experiment_id",
    "git_commit",
    "git_dirty",
    "input_digests",
    "input_files",
    "package_versions",
    "provenance_tags",
    "source_digest",
    "tracking_uri",
]

#: Packages whose versions every run records.
TRACKED_PACKAGES: Final = (
    "retailml",
    "mlflow",
    "numpy",
    "pandas",
    "scikit-learn",
    "statsforecast",
    "mlforecast",
    "prophet",
    "xgboost",
    "lightgbm",
    "torch",
    "optuna",
)
ARTIFACTS_DIR: Final = "mlartifacts"
#: The run artifact holding the reproducibility record.
REPRODUCIBILITY_ARTIFACT: Final = "reproducibility.json"
TRACKING_DB: Final = "mlflow.db"


def tracking_uri(settings: Settings | None = None) -> str:
    """The tracking URI of the settings (the workspace's SQLite store by default)."""
    settings = settings or get_settings()
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    root = Path(settings.home).resolve()
    return f"sqlite:///{root / TRACKING_DB}"


_configured: list[str] = []  # the URI retailml last set, if any


def ensure_tracking(settings: Settings | None = None) -> str:
    """Point MLflow at the settings' tracking store unless the user chose one; returns the URI.

    A URI the user set (``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``)
    is left alone; one retailml set earlier follows the current settings. The
    store never changes while a run is active.
    """
    current = str(mlflow.get_tracking_uri())
    user_chose = is_tracking_uri_set() and not (_configured and current == _configured[-1])  # type: ignore[no-untyped-call]
    if not user_chose and mlflow.active_run() is None:
        settings = settings or get_settings()
        wanted = tracking_uri(settings)
        if wanted != current or not _configured:
            Path(settings.home).mkdir(parents=True, exist_ok=True)
            # "Creating initial MLflow database tables..." on every new store.
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
            mlflow.set_tracking_uri(wanted)
            _configured.append(wanted)
            del _configured[:-1]
    return str(mlflow.get_tracking_uri())


def chosen_tracking_uri() -> str | None:
    """The tracking URI the user chose outside retailml (``MLFLOW_TRACKING_URI``), or None."""
    current = str(mlflow.get_tracking_uri())
    if is_tracking_uri_set() and not (_configured and current == _configured[-1]):  # type: ignore[no-untyped-call]
        return current
    return None


def experiment_id(
    name: str, settings: Settings | None = None, *, artifact_location: str | None = None
) -> str:
    """The id of an experiment, created with its artifacts in the workspace if new.

    ``artifact_location`` (an experiment config's ``artifact_store``) replaces
    the workspace location of a new experiment.
    """
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    settings = settings or get_settings()
    location = artifact_location
    if location is None and (
        not settings.mlflow_tracking_uri
        or settings.mlflow_tracking_uri.startswith(("sqlite", "file"))
    ):
        workspace = Workspace.from_settings(settings)
        location = (workspace.root / ARTIFACTS_DIR).resolve().as_uri()
    try:
        return str(mlflow.create_experiment(name, artifact_location=location))
    except mlflow.exceptions.MlflowException:
        # Created by a concurrent process between the lookup and the create.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`TRACKED_PACKAGES` (missing ones left out)."""
    versions = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(directory: Path | None = None) -> str | None:
    """The HEAD commit of the git checkout holding ``directory`` (cwd), or None."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and commit else None


def git_dirty(directory: Path | None = None) -> bool | None:
    """Whether the git checkout holding ``directory`` (cwd) has uncommitted changes, or None."""
    try:
        completed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(completed.stdout.strip()) if completed.returncode == 0 else None


def environment() -> dict[str, str]:
    """``distribution -> version`` of every installed distribution (the full environment)."""
    return dict(_environment())


@functools.lru_cache(maxsize=1)
def _environment() -> tuple[tuple[str, str], ...]:
    # Reading every distribution's metadata takes about half a second: once per process.
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found[str(name).lower()] = str(dist.version)
    return tuple(sorted(found.items()))


def environment_digest(packages: Mapping[str, str] | None = None) -> str:
    """SHA-256 (16 hex digits) of the sorted ``name==version`` lines of the environment."""
    packages = environment() if packages is None else packages
    lines = "\n".join(f"{name}=={version}" for name, version in sorted(packages.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 (16 hex digits) of retailml's own source files: the code that trains.

    It tells code changes apart that a git commit cannot: uncommitted edits,
    or an installed copy outside any checkout.
    """
    import retailml

    root = Path(retailml.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_files(
    data_version: str | None,
    feature_set_versions: Mapping[str, str] | None,
    settings: Settings | None = None,
) -> dict[str, list[Path]]:
    """The files that hold the given data versions, keyed ``silver`` and ``feature_set.<name>``.

    Silver: the parts of the ingestion runs that make up ``data_version``
    (missing parts included, so a caller can tell them). Feature sets: every
    file of the version's directory (an empty list when it is gone). A
    ``data_version`` unknown to the platform database gives no ``silver`` key.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from retailml.core.db import PlatformDB
    from retailml.training._jobs import silver_versions

    settings = settings or get_settings()
    files: dict[str, list[Path]] = {}
    if data_version:
        db = PlatformDB.from_settings(settings, migrate=False)
        try:
            known = silver_versions(db, settings)
        except SQLAlchemyError:
            known = []
        finally:
            db.dispose()
        found = next((v for v in known if v.version == data_version), None)
        if found is not None:
            files["silver"] = list(found.parts)
    features = Workspace.from_settings(settings).features
    for name, version in sorted((feature_set_versions or {}).items()):
        directory = features / name / version
        files[f"feature_set.{name}"] = (
            sorted(p for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else []
        )
    return files


def input_digests(
    data_version: str | None,
    feature_set_versions: Mapping[str, str] | None,
    settings: Settings | None = None,
) -> dict[str, dict[str, str | None]]:
    """``input -> {file name: SHA-256}`` of :func:`input_files` (None for a missing file).

    Silver parts are named by file name, feature files by their path inside
    the version directory.
    """
    settings = settings or get_settings()
    features = Workspace.from_settings(settings).features
    out: dict[str, dict[str, str | None]] = {}
    for key, paths in input_files(data_version, feature_set_versions, settings).items():
        entries: dict[str, str | None] = {}
        for path in paths:
            name = path.name
            if key.startswith("feature_set."):
                name = path.relative_to(features / key.split(".", 1)[1]).as_posix()
            entries[name] = _sha256(path) if path.is_file() else None
        out[key] = entries
    return out


def provenance_tags(
    *,
    data_version: str | None = None,
    feature_set_versions: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> dict[str, str]:
    """Tags that make a run reproducible: code, data, features and packages.

    Inside an active run it also logs :data:`REPRODUCIBILITY_ARTIFACT`: the
    full environment, the code version and the SHA-256 of every input file
    (module docstring). Failing to hash the inputs never fails a training: it
    is logged and the record says so.
    """
    tags = {f"retailml.version.{name}": version for name, version in package_versions().items()}
    commit = git_commit()
    dirty = git_dirty() if commit else None
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["retailml.git_commit"] = commit
        tags["retailml.git_dirty"] = "true" if dirty else "false"
    packages = environment()
    tags["retailml.environment_digest"] = environment_digest(packages)
    tags["retailml.source_digest"] = source_digest()
    if mlflow.active_run() is not None:
        try:
            digests: dict[str, Any] = input_digests(data_version, feature_set_versions, settings)
        except Exception as exc:  # recording must never fail the training it records
            logging.getLogger(__name__).warning("could not hash the training inputs: %s", exc)
            digests = {"error": f"{type(exc).__name__}: {exc}"}
        mlflow.log_dict(
            {
                "code_version": {"git_commit": commit, "git_dirty": dirty},
                "environment": {"python": platform.python_version(), "packages": packages},
                "data_version": data_version,
                "feature_set_versions": dict(feature_set_versions or {}),
                "inputs": digests,
            },
            REPRODUCIBILITY_ARTIFACT,
        )
    if data_version:
        tags["retailml.data_version"] = data_version
    for name, version in (feature_set_versions or {}).items():
        tags[f"retailml.feature_set.{name}"] = version
    if feature_set_versions:
        tags["retailml.feature_sets"] = json.dumps(dict(feature_set_versions), sort_keys=True)
    return tags


def loggable_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them: strings of at most 6000 characters."""
    out: dict[str, str] = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[key] = text[:6000]
    return out


def loggable_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The finite metrics (MLflow rejects NaN in some stores; NaN means undefined here)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float | np.floating) and math.isfinite(float(v))
    }


class RetailMLModel(PythonModel):
    """A trained retailml estimator as an MLflow ``pyfunc`` model.

    ``predict`` takes a DataFrame and returns one:

    * ``sales_forecast``: optional columns ``series_id`` (which series; all
      when absent), ``horizon`` and ``level`` (first row's value; the
      trained horizon and 95 when absent) -> ``series_id, date, prediction,
      lower, upper``;
    * ``customer_segmentation``: customer feature rows -> ``segment, segment_name``;
    * ``anomaly_detection``: feature rows -> ``score, is_anomaly``;
    * ``demand_prediction``: feature rows -> ``prediction``.
    """

    def __init__(
        self,
        model: Any,
        model_type: str,
        target: str | None,
        id_col: str = "series_id",
        time_col: str = "date",
    ) -> None:
        self.model = model
        self.model_type = model_type
        self.target = target
        self.id_col = id_col
        self.time_col = time_col

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Predict for ``model_input`` (see the class docstring for the shapes)."""
        from retailml.training._tasks import make_task

        frame = pd.DataFrame(model_input)
        if self.model_type == "sales_forecast":
            return self._forecast(frame)
        task = make_task(self.model_type, self.target, id_col=self.id_col, time_col=self.time_col)
        return task.predictions(self.model, frame)

    def _forecast(self, frame: pd.DataFrame) -> pd.DataFrame:
        horizon = None
        level = None
        if "horizon" in frame.columns and len(frame):
            horizon = int(frame["horizon"].iloc[0])
        if "level" in frame.columns and len(frame):
            level = float(frame["level"].iloc[0])
        forecast: pd.DataFrame = self.model.predict(horizon=horizon, level=level)
        if "series_id" in frame.columns and len(frame):
            wanted = set(frame["series_id"].astype(str))
            forecast = forecast[forecast["series_id"].astype(str).isin(wanted)]
        return forecast.reset_index(drop=True)


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's advice while retailml saves or loads its own models.

    MLflow warns about cloudpickle for every Python model and notes integer
    columns in inferred schemas; neither is actionable for retailml's own
    estimators, and both drown the CLI's output.
    """
    loggers = [logging.getLogger(name) for name in ("mlflow", "mlflow.pyfunc", "mlflow.models")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def pip_requirements() -> list[str]:
    """The installed versions of the tracked packages, pinned (MLflow would infer them slowly)."""
    return [
        f"{name}=={version}"
        for name, version in package_versions().items()
        if name not in {"python", "retailml"}
    ]


def log_pyfunc(wrapper: RetailMLModel, input_example: pd.DataFrame) -> str:
    """Log ``wrapper`` as the active run's ``model``; returns its model URI."""
    requirements = pip_requirements()
    with quiet_mlflow():
        output = wrapper.predict(None, input_example)
        signature = infer_signature(input_example, output)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapper,
            signature=signature,
            input_example=input_example,
            pip_requirements=requirements,
        )
    return str(info.model_uri)
