"""The guide's ``.mlflow/experiments/config.yaml``: where training runs go and what they record.

The file (guide, "MLOps Best Practices / 1. Version Control and Reproducibility")::

    experiment_config:
      name: "sales_forecasting"          # the MLflow experiment
      tracking_uri: "postgresql://..."   # the MLflow tracking store
      artifact_store: "s3://..."         # artifact location of a NEW experiment
    model_config:
      versioning_strategy: "semantic"    # the only one: the registry orders semantic versions
      artifact_storage: "s3://..."       # recorded (tag); files stay with the run
      metadata_storage: "postgresql://..."  # the platform database; never switched implicitly
    reproducibility:
      seed: 42                           # the trainer's seed (splits, tuning, estimators)
      environment: "requirements.txt"    # logged as an artifact of the run
      docker_image: "mlops/training:v1.2.0"
      code_version: "git_commit_hash"    # the current git commit; anything else literally

How it applies (``retailml train --experiment-config PATH``, or
``./.mlflow/experiments/config.yaml`` when the option is not given):

* **tracking_uri**: wins over the workspace default (``<home>/mlflow.db``), but
  a tracking URI the user set for this environment wins over the file
  (``RETAILML_MLFLOW_TRACKING_URI`` or ``mlflow_tracking_uri`` in
  ``retailml.yaml``, and ``MLFLOW_TRACKING_URI``): the file describes the
  project, the settings describe where it runs now (CI, a laptop).
  ``postgresql://`` is read as ``postgresql+psycopg://``, the driver retailml
  installs. A plain path in ``tracking_uri`` or ``artifact_store`` is relative
  to the working directory.
* **artifact_store**: MLflow fixes an experiment's artifact location when it is
  created, so it applies to a new experiment; an existing one keeps its own
  (a warning says so).
* **Run tags**: ``retailml.docker_image``, ``retailml.code_version``,
  ``retailml.versioning_strategy``, ``retailml.model_artifact_storage`` and
  ``retailml.experiment_config`` (the file's path); the file itself is logged
  as ``experiment_config.yaml`` and the environment file under
  ``environment/``.
* **metadata_storage**: retailml's platform database (``database_url``). It is
  only compared: a different URL prints how to set ``RETAILML_DATABASE_URL``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from retailml.core.errors import ConfigError, problem
from retailml.core.io import read_yaml_mapping
from retailml.core.settings import Settings, masked_setting

__all__ = [
    "DEFAULT_EXPERIMENT_CONFIG",
    "GIT_COMMIT_HASH",
    "ExperimentConfig",
    "ExperimentSection",
    "ModelSection",
    "ReproducibilitySection",
    "check_stores",
    "discover_experiment_config",
    "load_experiment_config",
    "mask",
    "record_run",
    "start_experiment",
]

#: Where ``retailml train`` looks when ``--experiment-config`` is not given (working directory).
DEFAULT_EXPERIMENT_CONFIG: Final = Path(".mlflow") / "experiments" / "config.yaml"
#: The ``code_version`` that means "the current git commit".
GIT_COMMIT_HASH: Final = "git_commit_hash"
#: The artifact the file itself is logged as.
CONFIG_ARTIFACT: Final = "experiment_config.yaml"

Warn = Callable[[str], None]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ExperimentSection(_Section):
    """``experiment_config``: the MLflow experiment, tracking store and artifact store."""

    name: str = Field(min_length=1, description="MLflow experiment name.")
    tracking_uri: str | None = Field(default=None, min_length=1)
    artifact_store: str | None = Field(default=None, min_length=1)


class ModelSection(_Section):
    """``model_config``: how model versions are named and where they are kept."""

    versioning_strategy: Literal["semantic"] = "semantic"
    artifact_storage: str | None = Field(default=None, min_length=1)
    metadata_storage: str | None = Field(default=None, min_length=1)

    @field_validator("versioning_strategy", mode="before")
    @classmethod
    def _semantic_only(cls, value: Any) -> Any:
        if value != "semantic":
            raise ValueError(
                "only 'semantic' (major.minor.patch) is supported, because the model "
                "registry orders versions as semantic versions (retailml.registry); "
                "write versioning_strategy: semantic"
            )
        return value


class ReproducibilitySection(_Section):
    """``reproducibility``: seed, environment file, image and code version of a run."""

    seed: int | None = Field(default=None, ge=0)
    environment: str | None = Field(default=None, min_length=1)
    docker_image: str | None = Field(default=None, min_length=1)
    code_version: str = Field(default=GIT_COMMIT_HASH, min_length=1)


class ExperimentConfig(_Section):
    """The whole file; every section is optional except ``experiment_config``.

    ``model_config_`` is the file's ``model_config`` section (pydantic reserves the name).
    """

    experiment_config: ExperimentSection
    model_config_: ModelSection = Field(default_factory=ModelSection, alias="model_config")
    reproducibility: ReproducibilitySection = Field(default_factory=ReproducibilitySection)
    _path: str | None = PrivateAttr(default=None)

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        str_strip_whitespace=True,
        protected_namespaces=(),
    )

    @property
    def path(self) -> str | None:
        """The file it was read from (None when built in code)."""
        return self._path

    def _from_file(self, path: str | None) -> ExperimentConfig:
        self._path = path
        return self

    # --- reading --------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, subject: str) -> ExperimentConfig:
        """Validate a mapping; every problem is reported at once.

        Raises:
            ConfigError: naming each bad key or value, with the valid keys of its section.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = [_describe(error) for error in exc.errors()]
            count = f"{len(problems)} error{'s' if len(problems) > 1 else ''}"
            raise ConfigError(
                problem(
                    "an experiment config as in the guide's 'Version Control and "
                    "Reproducibility' (experiment_config, model_config, reproducibility)",
                    f"{count}: " + "; ".join(problems),
                    "correct the keys and values named above",
                    subject=subject,
                )
            ) from exc

    # --- resolved values ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The MLflow experiment name."""
        return self.experiment_config.name

    @property
    def seed(self) -> int | None:
        """The training seed, or None for the ``seed`` setting."""
        return self.reproducibility.seed

    def tracking_uri(self) -> str | None:
        """The file's tracking URI in the form MLflow and the installed driver read."""
        uri = self.experiment_config.tracking_uri
        if uri is None:
            return None
        if uri.startswith("postgresql://"):
            return "postgresql+psycopg://" + uri.removeprefix("postgresql://")
        if "://" not in uri and not uri.startswith(("sqlite:", "file:")):
            return Path(uri).expanduser().resolve().as_uri()
        return uri

    def artifact_location(self) -> str | None:
        """``artifact_store`` as an MLflow artifact location (plain paths become file URIs)."""
        store = self.experiment_config.artifact_store
        if store is None or "://" in store or store.startswith("file:"):
            return store
        return Path(store).expanduser().resolve().as_uri()

    def environment_file(self) -> Path | None:
        """The environment (requirements) file, relative paths from the working directory."""
        env = self.reproducibility.environment
        return None if env is None else Path(env).expanduser().resolve()

    def settings_for(self, settings: Settings) -> tuple[Settings, str | None]:
        """Settings whose MLflow tracking URI follows the file, unless the settings chose one.

        Returns:
            The settings to train with, and a note when the settings' URI won
            over the file's (None otherwise).
        """
        wanted = self.tracking_uri()
        if wanted is None:
            return settings, None
        from retailml.training._tracking import chosen_tracking_uri

        mlflow_env = chosen_tracking_uri()
        if mlflow_env:
            return settings, (
                f"tracking URI {mask(mlflow_env)} (MLFLOW_TRACKING_URI) wins over the "
                f"experiment config's {mask(wanted)}"
            )
        if settings.mlflow_tracking_uri:
            if settings.mlflow_tracking_uri == wanted:
                return settings, None
            return settings, (
                f"tracking URI {mask(settings.mlflow_tracking_uri)} (RETAILML_MLFLOW_TRACKING_URI) "
                f"wins over the experiment config's {mask(wanted)}"
            )
        return settings.model_copy(update={"mlflow_tracking_uri": wanted}), None

    def notes(self, settings: Settings) -> list[str]:
        """What the user should know before training: settings that differ from the file."""
        notes: list[str] = []
        _, overridden = self.settings_for(settings)
        if overridden:
            notes.append(overridden)
        metadata = self.model_config_.metadata_storage
        if metadata is not None:
            wanted = _sqlalchemy_url(metadata)
            current = settings.resolved_database_url
            if wanted != current:
                notes.append(
                    f"model_config.metadata_storage is {mask(metadata)} but the platform "
                    f"database is {mask(current)}; retailml does not switch databases "
                    f"implicitly: to use it, set RETAILML_DATABASE_URL={mask(metadata)} "
                    "(or database_url in retailml.yaml); its schema is created on first use"
                )
        storage = self.model_config_.artifact_storage
        if storage is not None and storage != self.experiment_config.artifact_store:
            notes.append(
                f"model_config.artifact_storage {storage!r} is recorded as the run tag "
                "retailml.model_artifact_storage; the model files stay with the run in the "
                "experiment's artifact store (MLflow keeps a registered version's files where "
                "its run logged them)"
            )
        env = self.environment_file()
        if env is not None and not env.is_file():
            notes.append(
                f"reproducibility.environment {self.reproducibility.environment!r}: no file at "
                f"{env}; the run records the installed packages but not this file"
            )
        return notes

    def run_tags(self, git_commit: str | None, source_digest: str) -> dict[str, str]:
        """The tags the file adds to a training run.

        ``code_version: git_commit_hash`` is the commit (``source:<digest>`` of
        retailml's code outside a git checkout); any other value is recorded as is.
        """
        code_version = self.reproducibility.code_version
        if code_version == GIT_COMMIT_HASH:
            code_version = git_commit or f"source:{source_digest}"
        tags = {
            "retailml.code_version": code_version,
            "retailml.versioning_strategy": self.model_config_.versioning_strategy,
        }
        if self.reproducibility.docker_image:
            tags["retailml.docker_image"] = self.reproducibility.docker_image
        if self.model_config_.artifact_storage:
            tags["retailml.model_artifact_storage"] = self.model_config_.artifact_storage
        if self.path:
            tags["retailml.experiment_config"] = self.path
        return tags

    def to_inputs(self) -> dict[str, Any]:
        """A JSON mapping a training job records (paths resolved, so a restart agrees)."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        env = self.environment_file()
        if env is not None:
            data["reproducibility"]["environment"] = str(env)
        tracking = self.tracking_uri()
        if tracking is not None:
            data["experiment_config"]["tracking_uri"] = tracking
        store = self.artifact_location()
        if store is not None:
            data["experiment_config"]["artifact_store"] = store
        return {"path": self.path, "config": data}

    @classmethod
    def from_inputs(cls, recorded: dict[str, Any]) -> ExperimentConfig:
        """The config a job recorded with :meth:`to_inputs`."""
        loaded = cls.from_mapping(dict(recorded["config"]), subject="training job")
        return loaded._from_file(recorded.get("path"))


def start_experiment(config: ExperimentConfig, settings: Settings, warn: Warn) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; its id.

    ``settings`` are those of :meth:`ExperimentConfig.settings_for`. A new
    experiment gets ``artifact_store`` as its artifact location; an existing
    one keeps its own, and ``warn`` says so when they differ.
    """
    import mlflow

    from retailml.training._tracking import ensure_tracking, experiment_id

    ensure_tracking(settings)
    wanted = config.artifact_location()
    existing = mlflow.get_experiment_by_name(config.name)
    if existing is not None:
        location = str(existing.artifact_location)
        if wanted is not None and location.rstrip("/") != wanted.rstrip("/"):
            warn(
                f"experiment {config.name!r} already exists with artifact location "
                f"{location}; MLflow cannot move it, so artifact_store {wanted} applies to "
                "new experiments only (choose a new experiment_config.name to use it)"
            )
        return str(existing.experiment_id)
    return experiment_id(config.name, settings, artifact_location=wanted)


def check_stores(config: ExperimentConfig, settings: Settings) -> None:
    """Fail fast, before a job is recorded, on stores this process cannot reach.

    ``settings`` are those of :meth:`ExperimentConfig.settings_for`. A
    PostgreSQL tracking store gets one connection attempt (5 s timeout; MLflow
    itself would retry for minutes); an ``s3://``/``gs://``/``wasbs://``
    artifact store needs its client library.

    Raises:
        ConfigError: naming the store and how to fix it.
    """
    import importlib.util

    subject = config.path or "experiment config"
    uri = settings.mlflow_tracking_uri
    from retailml.training._tracking import chosen_tracking_uri

    chosen = chosen_tracking_uri()
    if (
        not chosen
        and uri is not None
        and uri == config.tracking_uri()
        and uri.startswith("postgresql")
    ):
        import sqlalchemy
        from sqlalchemy.exc import SQLAlchemyError

        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 5})
        try:
            with engine.connect():
                pass
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise ConfigError(
                problem(
                    "a reachable MLflow tracking store",
                    f"{mask(uri)}: {reason}",
                    "fix experiment_config.tracking_uri, or set RETAILML_MLFLOW_TRACKING_URI "
                    "(it wins over the file)",
                    subject=f"{subject}: experiment_config.tracking_uri",
                )
            ) from exc
        finally:
            engine.dispose()
    location = config.artifact_location() or ""
    scheme = location.split("://", 1)[0] if "://" in location else ""
    needed = _ARTIFACT_CLIENTS.get(scheme)
    if needed is not None and importlib.util.find_spec(needed[0].split(".")[0]) is None:
        raise ConfigError(
            problem(
                f"the {needed[1]} package for a {scheme}:// artifact store",
                f"{location!r} with {needed[1]} not installed",
                f"pip install {needed[1]}, or point artifact_store at a local directory",
                subject=f"{subject}: experiment_config.artifact_store",
            )
        )


#: Artifact store scheme -> (module, package) MLflow needs to write there.
_ARTIFACT_CLIENTS: Final = {
    "s3": ("boto3", "boto3"),
    "gs": ("google.cloud.storage", "google-cloud-storage"),
    "wasbs": ("azure.storage.blob", "azure-storage-blob"),
}


def record_run(config: ExperimentConfig, run_id: str) -> dict[str, str]:
    """Tag a finished training run with the file's values and log the file and environment.

    Returns:
        The tags set.
    """
    from mlflow.tracking import MlflowClient

    from retailml.training._tracking import git_commit, source_digest

    client = MlflowClient()
    tags = config.run_tags(git_commit(), source_digest())
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.log_dict(
        run_id, config.model_dump(mode="json", by_alias=True, exclude_none=True), CONFIG_ARTIFACT
    )
    env = config.environment_file()
    if env is not None and env.is_file():  # a missing one is among the notes
        client.log_artifact(run_id, str(env), artifact_path="environment")
    return tags


def mask(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    return str(masked_setting("url", url))


def _sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


_SECTIONS: Final[dict[str, type[BaseModel]]] = {
    "experiment_config": ExperimentSection,
    "model_config": ModelSection,
    "reproducibility": ReproducibilitySection,
}


def _describe(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    where = ".".join(loc) or "<file>"
    if error["type"] == "extra_forbidden":
        if len(loc) == 1:
            valid = list(_SECTIONS)
            return f"unknown section {loc[0]!r} (valid sections: {', '.join(valid)})"
        section = _SECTIONS.get(loc[0])
        valid = list(section.model_fields) if section is not None else []
        return f"unknown key {where!r} (valid keys of {loc[0]}: {', '.join(valid)})"
    if error["type"] == "missing":
        return f"{where} is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message} (got {error.get('input')!r})"


def load_experiment_config(path: Path) -> ExperimentConfig:
    """Read and validate an experiment config file.

    Raises:
        ConfigError: a missing file, bad YAML, an unknown key (listing the
            valid ones) or a bad value such as ``versioning_strategy: calendar``.
    """
    data = read_yaml_mapping(
        path,
        subject="--experiment-config",
        shape="experiment_config, model_config and reproducibility (see the guide's "
        "'Version Control and Reproducibility')",
    )
    loaded = ExperimentConfig.from_mapping(data, subject=str(path))
    return loaded._from_file(str(path.resolve()))


def discover_experiment_config(directory: Path | None = None) -> Path | None:
    """``<directory>/.mlflow/experiments/config.yaml`` (the working directory) if it exists."""
    candidate = (directory or Path.cwd()) / DEFAULT_EXPERIMENT_CONFIG
    return candidate if candidate.is_file() else None
