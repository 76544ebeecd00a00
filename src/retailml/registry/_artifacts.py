"""Where a model artifact comes from, and copies of it on local disk.

``register_model`` accepts a :class:`~retailml.training.model_trainer.TrainingResult`,
a model URI (``models:/<model_id>``, ``models:/<name>/<version>``,
``models:/<name>@<alias>``, ``runs:/<run_id>/<path>`` or any artifact URI such
as ``file://`` or ``s3://``), or a local directory holding an MLflow model
(``MLmodel`` at its top, or in ``model/`` as :meth:`TrainingResult.save` writes
it). Each becomes a :class:`Source`: the artifact location MLflow registers
and downloads from. A local directory is first uploaded as an MLflow logged
model, so every registered version lives in the artifact store.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import mlflow.artifacts
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from retailml.core.errors import ConfigError, NotFoundError, problem
from retailml.core.settings import Settings
from retailml.training._tracking import experiment_id

#: The experiment that holds models registered from a local directory.
UPLOAD_EXPERIMENT: Final = "retailml-registry"
_MLMODEL: Final = "MLmodel"
_MODEL_ID: Final = re.compile(r"^models:/(m-[0-9a-f]{32})/?$")
_REGISTERED: Final = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>.+))$")


@dataclass(frozen=True)
class Source:
    """An artifact location in MLflow's store, and what produced it."""

    uri: str
    run_id: str | None = None
    model_id: str | None = None


def _bad_artifact(got: str) -> ConfigError:
    return ConfigError(
        problem(
            "a TrainingResult, a models:/ or runs:/ URI, or a directory holding an MLflow "
            "model (MLmodel, or model/MLmodel)",
            got,
            "pass the trainer's result, result.model_uri, or a TrainingResult.save directory",
            subject="model_artifact",
        )
    )


def model_directory(path: Path) -> Path:
    """The MLflow model directory in ``path`` (itself, or its ``model/``)."""
    for candidate in (path, path / "model"):
        if (candidate / _MLMODEL).is_file():
            return candidate
    raise _bad_artifact(f"{str(path)!r}, which holds no {_MLMODEL} file")


def resolve_source(client: MlflowClient, artifact: Any, settings: Settings) -> Source:
    """The artifact location of ``artifact`` in MLflow's store (uploading a local directory)."""
    if isinstance(artifact, os.PathLike) or (
        isinstance(artifact, str) and ":/" not in artifact and Path(artifact).exists()
    ):
        return upload_directory(client, model_directory(Path(artifact)), settings)
    if isinstance(artifact, str):
        return _resolve_uri(client, artifact)
    from retailml.training.model_trainer import TrainingResult

    if isinstance(artifact, TrainingResult):
        if artifact.model_uri:
            source = _resolve_uri(client, artifact.model_uri)
            return Source(source.uri, source.run_id or artifact.run_id, source.model_id)
        # Trained without tracking: save the fitted model and upload it.
        with tempfile.TemporaryDirectory(prefix="retailml-register-") as tmp:
            saved = artifact.save(Path(tmp) / "result")
            return upload_directory(client, saved / "model", settings, run_id=artifact.run_id)
    raise _bad_artifact(f"{type(artifact).__name__} {artifact!r}"[:300])


def _resolve_uri(client: MlflowClient, uri: str) -> Source:
    try:
        if match := _MODEL_ID.match(uri):
            logged = client.get_logged_model(match.group(1))
            return Source(logged.artifact_location, logged.source_run_id, logged.model_id)
        if match := _REGISTERED.match(uri):
            name = match.group("name")
            if match.group("alias"):
                version = client.get_model_version_by_alias(name, match.group("alias"))
            else:
                version = client.get_model_version(name, match.group("version"))
            location = client.get_model_version_download_uri(name, str(version.version))
            return Source(location, version.run_id, version.model_id)
        if urllib.parse.urlparse(uri).scheme == "runs":
            return _resolve_runs_uri(client, uri)
    except MlflowException as exc:
        raise NotFoundError(
            problem(
                "a model URI that exists in the tracking store",
                f"{uri!r} ({exc.message})",
                "check the URI (result.model_uri of a training run) and the tracking URI",
                subject="model_artifact",
            )
        ) from exc
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", uri):
        return Source(uri)
    raise _bad_artifact(f"{uri!r}, neither a URI nor an existing directory")


def _resolve_runs_uri(client: MlflowClient, uri: str) -> Source:
    """A runs:/ URI: the model the run logged under that name, else the run's own artifacts."""
    run_id, _, artifact_path = urllib.parse.urlparse(uri).path.lstrip("/").partition("/")
    artifact_path = artifact_path.strip("/")
    if not run_id:
        raise _bad_artifact(f"{uri!r}, a runs:/ URI without a run id (runs:/<run_id>/<path>)")
    run = client.get_run(run_id)
    # MLflow 3 logs models as logged models linked to the run, not as run artifacts.
    logged = [
        model
        for model in client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"name = '{artifact_path}'",
        )
        if model.source_run_id == run_id
    ]
    if logged:
        newest = max(logged, key=lambda model: model.creation_timestamp)
        return Source(newest.artifact_location, run_id, newest.model_id)
    location = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    names = {info.path.rsplit("/", 1)[-1] for info in client.list_artifacts(run_id, artifact_path)}
    if _MLMODEL in names:
        return Source(location, run_id)
    raise NotFoundError(
        problem(
            f"a model logged as {artifact_path!r} by run {run_id!r}",
            "no such model among the run's logged models or artifacts",
            "pass result.model_uri (models:/m-...) or the run's model artifact path",
            subject="model_artifact",
        )
    )


def upload_directory(
    client: MlflowClient, directory: Path, settings: Settings, *, run_id: str | None = None
) -> Source:
    """Log a local MLflow model directory as a logged model; returns its location."""
    experiment = experiment_id(UPLOAD_EXPERIMENT, settings)
    logged = client.create_logged_model(experiment, name="model", source_run_id=run_id)
    try:
        client.log_model_artifacts(logged.model_id, str(directory))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return Source(logged.artifact_location, run_id, logged.model_id)


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    # MLflow draws a tqdm bar on stderr for every download; the CLI has its own.
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def download(uri: str, destination: Path, tracking_uri: str) -> Path:
    """Download the artifact directory at ``uri`` into the empty directory ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=destination.parent) as tmp:
        with _no_progress_bar():
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri
                )
            )
        for entry in local.iterdir():
            shutil.move(str(entry), destination / entry.name)
    return destination
