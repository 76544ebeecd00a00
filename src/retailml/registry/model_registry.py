"""ModelRegistry: semantic versions, aliases and artifact digests on MLflow's Model Registry.

::

    from retailml.deployment.model_server import ModelRegistry

    registry = ModelRegistry()
    version = registry.register_model(
        model_name="sales_forecast_prophet",
        model_version="1.2.0",
        model_artifact=result,                  # TrainingResult, models:/ or runs:/ URI, directory
        metadata={"algorithm": "prophet", "training_timestamp": datetime.now()},
        tags=["production_ready"],
    )
    registry.set_alias("sales_forecast_prophet", "1.2.0", "staging")
    model = registry.load_model("sales_forecast_prophet", "staging")   # digest-checked

Where things live
-----------------
MLflow's Model Registry holds each version (its integer version, source
artifact, aliases and tags, among them ``retailml.semver`` and
``retailml.digest``). The platform database's ``model_versions`` table is the
index beside it: the semantic version, the artifact digest, metadata and tags
as JSON, status (``active``, ``archived``, ``deleted``) and last use; listing
and pagination read it. Aliases (``production``, ``staging``, ``canary``)
live in MLflow only, so the MLflow UI and this class never disagree on them.

Integrity
---------
At registration the stored artifact is downloaded into
``<home>/models/cache/<model>/<version>`` and its SHA-256 digest (sorted
relative paths, sizes and contents of every file) recorded in the database.
Every load recomputes it: a cached copy that changed is discarded and
downloaded again, and a stored artifact that changed is refused with
:class:`ArtifactIntegrityError`, never loaded.

Rules
-----
Semantic versions are ``major.minor.patch`` with an optional pre-release
and must increase per model; a deleted version's number is never reused.
A version holding the ``production`` alias cannot be deleted or archived:
promote another version or roll back first. The ``production`` alias moves
only to a version with an approved governance request for production, or
one the deployment layer has made production's active deployment (which
requires that approval), so the registry is no way around governance.

Audit
-----
Registrations, alias changes, deletions, archiving and restores are
appended to the hash-chained audit log (:func:`retailml.core.audit.append_audit`).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from retailml.core.audit import append_audit, version_subject
from retailml.core.db import PlatformDB, new_id, utcnow
from retailml.core.db_deploy import is_active_deployment
from retailml.core.db_governance import has_approved_request
from retailml.core.db_registry import ModelVersionRecord
from retailml.core.errors import (
    ConfigError,
    NotFoundError,
    RetailMLError,
    StateError,
    problem,
)
from retailml.core.io import atomic_path
from retailml.core.lineage import Dataset, emit_run
from retailml.core.settings import Settings, get_settings
from retailml.registry._artifacts import Source, download, resolve_source
from retailml.registry._digest import directory_digest
from retailml.registry._records import Instant, ModelVersion, RegisteredModel, json_safe
from retailml.registry._semver import SemverKey, is_semver, parse_semver
from retailml.training._tracking import ensure_tracking, quiet_mlflow

__all__ = [
    "ALIASES",
    "ArtifactIntegrityError",
    "ModelRegistry",
    "ModelVersion",
    "RegisteredModel",
]

logger = logging.getLogger(__name__)

#: The aliases a version can hold.
ALIASES: Final = ("production", "staging", "canary")
#: Version tags retailml sets in MLflow (user tags may not use the prefix).
TAG_PREFIX: Final = "retailml."
SEMVER_TAG: Final = "retailml.semver"
DIGEST_TAG: Final = "retailml.digest"
STATUS_TAG: Final = "retailml.status"
#: MLflow's limit on a model version description.
_DESCRIPTION_LIMIT: Final = 5000
_ROLLBACK_FIX: Final = "promote another version or roll back first"


class ArtifactIntegrityError(StateError):
    """A model artifact no longer matches the digest recorded when it was registered."""


class ModelRegistry:
    """Register, look up, load and retire model versions (see the module docstring).

    Args:
        settings: retailml settings; default the process settings. They name
            the platform database, the MLflow tracking store and the workspace.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._db: PlatformDB | None = None
        self._client: MlflowClient | None = None
        self._tracking_uri: str | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry(home={str(self.settings.home)!r})"

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the database connections."""
        if self._db is not None:
            self._db.dispose()
            self._db = None

    # --- backends -----------------------------------------------------------------------------

    @property
    def db(self) -> PlatformDB:
        """The platform database (migrated on first use)."""
        if self._db is None:
            self._db = PlatformDB.from_settings(self.settings)
        return self._db

    @property
    def client(self) -> MlflowClient:
        """The MLflow client of the tracking and registry store."""
        if self._client is None:
            self._tracking_uri = ensure_tracking(self.settings)
            self._client = MlflowClient(self._tracking_uri, self._tracking_uri)
        return self._client

    @property
    def cache_dir(self) -> Path:
        """Where verified local copies of model artifacts are kept."""
        return self.settings.home.resolve() / "models" / "cache"

    # --- registration -------------------------------------------------------------------------

    def register_model(
        self,
        model_name: str,
        model_version: str,
        model_artifact: Any,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | Mapping[str, Any] | None = None,
        *,
        created_by: str | None = None,
    ) -> ModelVersion:
        """Register a new version of a model.

        Args:
            model_name: Registered model name (letters, digits, ``_``, ``.``, ``-``);
                created on its first version.
            model_version: Semantic version, higher than every earlier one of the model.
            model_artifact: A ``TrainingResult``, a model URI (``models:/...``,
                ``runs:/...``, or an artifact URI), or a local directory holding
                an MLflow model (or a ``TrainingResult.save`` directory).
            metadata: Anything JSON can hold after conversion (datetimes become
                ISO 8601 strings, numpy numbers plain numbers, NaN null).
            tags: Tag names (each set to ``"true"``) or a ``name -> value`` mapping.
            created_by: Who registers it; default the operating-system user.

        Returns:
            The new :class:`ModelVersion`.

        Raises:
            ConfigError: for a bad name, version, tag or artifact.
            DataValidationError: for metadata with no JSON form.
            StateError: when the version is not above the model's latest.
            NotFoundError: when the artifact URI names nothing.
        """
        _check_name(model_name)
        key = parse_semver(model_version)
        meta = json_safe(dict(metadata or {}))
        tag_map = _tag_map(tags)
        self._check_increases(model_name, model_version, key)

        client = self.client
        with _translated(f"model {model_name!r}"):
            source = resolve_source(client, model_artifact, self.settings)
        staging = self._download_to_cache(model_name, model_version, source.uri)
        try:
            digest = directory_digest(staging)
            mlflow_version = self._create_mlflow_version(
                model_name, model_version, source, digest, meta, tag_map
            )
            record = ModelVersionRecord(
                model_name=model_name,
                semver=model_version,
                mlflow_version=mlflow_version,
                digest=digest,
                model_uri=source.uri,
                run_id=source.run_id,
                meta=meta,
                tags=tag_map,
                created_at=utcnow(),
                created_by=created_by or _current_user(),
                status="active",
            )
            try:
                with self.db.session() as session:
                    session.add(record)
            except BaseException as exc:
                # Never leave an MLflow version the index does not know.
                with contextlib.suppress(MlflowException):
                    client.delete_model_version(model_name, str(mlflow_version))
                if not isinstance(exc, IntegrityError):
                    raise
                # Registered concurrently by another process.
                raise StateError(
                    problem(
                        f"a new version of model {model_name!r}",
                        f"{model_version!r}, registered by another process just now",
                        "register a higher version",
                        subject="model_version",
                    )
                ) from exc
            final = self._cache_path(model_name, model_version)
            with atomic_path(final, directory=True) as tmp:
                tmp.rmdir()
                staging.replace(tmp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._audit(
            "registry.registered",
            model_name,
            model_version,
            {
                "mlflow_version": mlflow_version,
                "digest": digest,
                "run_id": record.run_id,
                "model_uri": record.model_uri,
            },
            actor=record.created_by,
        )
        logger.info(
            "registered %s %s (MLflow version %s, digest %s)",
            model_name,
            model_version,
            mlflow_version,
            digest,
        )
        emit_run(
            f"register.{model_name}",
            inputs=[
                Dataset(f"run.{record.run_id}") if record.run_id else Dataset(record.model_uri)
            ],
            outputs=[Dataset(f"model.{model_name}", model_version)],
            description=f"registration of {model_name} {model_version}",
            parameters={"mlflow_version": mlflow_version, "digest": digest},
            settings=self.settings,
        )
        return self._version(record, {})

    def _check_increases(self, model_name: str, semver: str, key: SemverKey) -> None:
        with self.db.session() as session:
            known = list(
                session.scalars(
                    select(ModelVersionRecord).where(ModelVersionRecord.model_name == model_name)
                )
            )
        if not known:
            return
        same = next((row for row in known if row.semver == semver), None)
        latest = max(known, key=lambda row: parse_semver(row.semver))
        if same is None and key > parse_semver(latest.semver):
            return
        major, minor, patch, pre, _ = parse_semver(latest.semver)
        nexts = (
            [f"{major}.{minor}.{patch}"]
            if pre == 0
            else [f"{major}.{minor}.{patch + 1}", f"{major}.{minor + 1}.0", f"{major + 1}.0.0"]
        )
        got = (
            f"{semver!r}, already registered ({same.status}, {same.created_at:%Y-%m-%d})"
            if same is not None
            else f"{semver!r}, lower than the latest {latest.semver!r}"
        )
        raise StateError(
            problem(
                f"a version above the latest of model {model_name!r}, {latest.semver!r} "
                "(versions only increase; deleted ones are not reused)",
                got,
                "register it as " + " or ".join(repr(v) for v in nexts),
                subject="model_version",
            )
        )

    def _create_mlflow_version(
        self,
        model_name: str,
        semver: str,
        source: Source,
        digest: str,
        metadata: dict[str, Any],
        tags: dict[str, str],
    ) -> int:
        client = self.client
        description = json.dumps(metadata, sort_keys=True)
        with _translated(f"model {model_name!r}"):
            try:
                client.create_registered_model(model_name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            created = client.create_model_version(
                model_name,
                source.uri,
                run_id=source.run_id,
                tags={**tags, SEMVER_TAG: semver, DIGEST_TAG: digest, STATUS_TAG: "active"},
                description=description if len(description) <= _DESCRIPTION_LIMIT else None,
                model_id=source.model_id,
            )
        return int(created.version)

    # --- lookup -------------------------------------------------------------------------------

    def list_models(self) -> list[RegisteredModel]:
        """Every model with a version not deleted, by name."""
        with self.db.session() as session:
            rows = list(
                session.scalars(
                    select(ModelVersionRecord)
                    .where(ModelVersionRecord.status != "deleted")
                    .order_by(ModelVersionRecord.model_name, ModelVersionRecord.id.desc())
                )
            )
        by_name: dict[str, list[ModelVersionRecord]] = {}
        for row in rows:
            by_name.setdefault(row.model_name, []).append(row)
        models = []
        for name, versions in by_name.items():
            semver_of = {row.mlflow_version: row.semver for row in versions}
            aliases = {
                alias: semver_of[number]
                for alias, number in self._aliases(name).items()
                if number in semver_of
            }
            environment = next((a for a in ("production", "staging") if a in aliases), "none")
            models.append(
                RegisteredModel(
                    name=name,
                    latest_version=versions[0].semver,
                    environment=environment,
                    aliases=aliases,
                    versions=tuple(row.semver for row in versions),
                    created_at=Instant.of(min(row.created_at for row in versions)),
                    last_used=max(
                        Instant.of(row.last_used_at or row.created_at) for row in versions
                    ),
                )
            )
        return models

    def get_model_versions(
        self, model_name: str, limit: int = 20, offset: int = 0
    ) -> list[ModelVersion]:
        """A page of a model's versions not deleted, newest first.

        Raises:
            ConfigError: for a limit below 1 or a negative offset.
            NotFoundError: for an unknown model, listing the known ones.
        """
        for name, value, least in (("limit", limit, 1), ("offset", offset, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(
                    problem(f"an int >= {least}", repr(value), f"pass e.g. {name}=20", subject=name)
                )
        self._require_model(model_name)
        with self.db.session() as session:
            rows = list(
                session.scalars(
                    select(ModelVersionRecord)
                    .where(
                        ModelVersionRecord.model_name == model_name,
                        ModelVersionRecord.status != "deleted",
                    )
                    .order_by(ModelVersionRecord.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
        aliases = self._aliases(model_name)
        return [self._version(row, aliases) for row in rows]

    def get_model_version(self, model_name: str, version: str | None = None) -> ModelVersion:
        """One version, by semantic version or alias (None: production, else the latest).

        Raises:
            NotFoundError: listing the versions and aliases that exist.
        """
        self._require_model(model_name)
        aliases = self._aliases(model_name)
        return self._version(self._resolve(model_name, version, aliases), aliases)

    def get_by_alias(self, model_name: str, alias: str) -> ModelVersion:
        """The version holding ``alias``.

        Raises:
            ConfigError: for an alias outside :data:`ALIASES`.
            NotFoundError: when no version holds it, listing the aliases set.
        """
        _check_alias(alias)
        return self.get_model_version(model_name, alias)

    # --- aliases ------------------------------------------------------------------------------

    def set_alias(self, model_name: str, version: str, alias: str) -> ModelVersion:
        """Point ``alias`` at a version (moving it from the version holding it).

        ``version`` may itself be an alias: ``set_alias(name, "staging", "production")``
        promotes the staging version.

        Raises:
            ConfigError: for an alias outside :data:`ALIASES`.
            NotFoundError: for an unknown model or version.
            StateError: when the version is archived, or for ``production``
                when the version is neither approved for production nor its
                active deployment there.
        """
        _check_alias(alias)
        self._require_model(model_name)
        aliases = self._aliases(model_name)
        record = self._resolve(model_name, version, aliases)
        if alias == "production":
            self._refuse_ungoverned(record)
        if record.status != "active":
            raise StateError(
                problem(
                    f"an active version to hold alias {alias!r}",
                    f"{record.semver!r}, which is {record.status}",
                    f"restore it first: registry.restore_model_version({model_name!r}, "
                    f"{record.semver!r})",
                    subject=f"model {model_name!r}",
                )
            )
        with _translated(f"model {model_name!r}"):
            self.client.set_registered_model_alias(model_name, alias, str(record.mlflow_version))
        logger.info("alias %s of %s -> %s", alias, model_name, record.semver)
        previous = self._semver_of(model_name, aliases.get(alias))
        if previous != record.semver:
            self._audit(
                "alias.set",
                model_name,
                record.semver,
                {"alias": alias, "previous_version": previous},
            )
        return self._version(record, {**aliases, alias: record.mlflow_version})

    def delete_alias(self, model_name: str, alias: str) -> None:
        """Remove ``alias`` from the model (nothing then answers to it).

        Raises:
            NotFoundError: when no version holds it.
        """
        _check_alias(alias)
        held = self.get_by_alias(model_name, alias)
        with _translated(f"model {model_name!r}"):
            self.client.delete_registered_model_alias(model_name, alias)
        self._audit("alias.deleted", model_name, held.version, {"alias": alias})

    # --- loading ------------------------------------------------------------------------------

    def download_model(self, model_name: str, version: str | None = None) -> Path:
        """A local copy of a version's model directory whose digest matches the registered one.

        Args:
            model_name: The model.
            version: Semantic version or alias; None is the production
                version, or the latest active one when none serves production.

        Raises:
            ArtifactIntegrityError: when the stored artifact changed since registration.
            NotFoundError: for an unknown model, version or alias.
            StateError: for an archived version.
        """
        record = self._loadable(model_name, version)
        return self._verified(record)

    def load_model(self, model_name: str, version: str | None = None) -> PyFuncModel:
        """Load a version as an MLflow pyfunc model, after checking its digest.

        Args:
            model_name: The model.
            version: Semantic version or alias; None is the production
                version, or the latest active one when none serves production.

        Returns:
            The model (``model.predict(frame)``).

        Raises:
            ArtifactIntegrityError: when the stored artifact changed since registration.
            NotFoundError: for an unknown model, version or alias.
            StateError: for an archived version.
        """
        record = self._loadable(model_name, version)
        path = self._verified(record)
        with quiet_mlflow():
            model: PyFuncModel = mlflow.pyfunc.load_model(str(path))
        with self.db.session() as session:
            row = session.get(ModelVersionRecord, record.id)
            if row is not None:
                row.last_used_at = utcnow()
        return model

    def _loadable(self, model_name: str, version: str | None) -> ModelVersionRecord:
        self._require_model(model_name)
        record = self._resolve(model_name, version, self._aliases(model_name))
        if record.status != "active":
            raise StateError(
                problem(
                    "an active version to load",
                    f"{record.semver!r}, which is {record.status}",
                    f"restore it first: registry.restore_model_version({model_name!r}, "
                    f"{record.semver!r})",
                    subject=f"model {model_name!r}",
                )
            )
        return record

    def _cache_path(self, model_name: str, semver: str) -> Path:
        return self.cache_dir / model_name / semver

    def _download_to_cache(self, model_name: str, semver: str, uri: str) -> Path:
        """Download ``uri`` to a fresh staging directory beside the version's cache entry."""
        final = self._cache_path(model_name, semver)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.with_name(f".{final.name}.{new_id()}.download")
        try:
            with _translated(f"model {model_name!r} version {semver!r}"):
                download(uri, staging, self._tracking())
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _verified(self, record: ModelVersionRecord) -> Path:
        final = self._cache_path(record.model_name, record.semver)
        if final.is_dir():
            try:
                cached = directory_digest(final)
            except NotFoundError:
                cached = None
            if cached == record.digest:
                return final
            logger.warning(
                "cached copy of %s %s changed (digest %s, registered %s); downloading it again",
                record.model_name,
                record.semver,
                cached,
                record.digest,
            )
            shutil.rmtree(final, ignore_errors=True)
        staging = self._download_to_cache(record.model_name, record.semver, record.model_uri)
        try:
            actual = directory_digest(staging)
            if actual != record.digest:
                raise ArtifactIntegrityError(
                    problem(
                        f"the artifact registered with SHA-256 digest {record.digest}",
                        f"digest {actual} for the copy stored at {record.model_uri!r}",
                        "the artifact changed after registration and will not be served: "
                        "restore the original files, or register a trusted copy as a new "
                        "version",
                        subject=f"model {record.model_name!r} version {record.semver!r}",
                    )
                )
            with atomic_path(final, directory=True) as tmp:
                tmp.rmdir()
                staging.replace(tmp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    # --- retiring -----------------------------------------------------------------------------

    def delete_model_version(self, model_name: str, version: str) -> ModelVersion:
        """Delete a version from MLflow's registry; its row stays, marked ``deleted``.

        Raises:
            NotFoundError: for an unknown model or version.
            StateError: when the version holds the ``production`` alias.
        """
        self._require_model(model_name)
        aliases = self._aliases(model_name)
        record = self._resolve(model_name, version, aliases)
        self._refuse_production(record, aliases, "delete")
        with _translated(f"model {model_name!r}"):
            try:
                self.client.delete_model_version(model_name, str(record.mlflow_version))
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        with self.db.session() as session:
            row = session.get(ModelVersionRecord, record.id)
            assert row is not None
            row.status = "deleted"
            record = row
        shutil.rmtree(self._cache_path(model_name, record.semver), ignore_errors=True)
        logger.info("deleted %s %s", model_name, record.semver)
        self._audit("registry.deleted", model_name, record.semver, {})
        return self._version(record, {})

    def archive_model(self, model_name: str, version: str | None = None) -> list[ModelVersion]:
        """Archive one version, or every active version of the model when ``version`` is None.

        An archived version keeps its artifact and row but loses its aliases
        and cannot be loaded or aliased until restored.

        Returns:
            The versions archived (already archived ones are returned unchanged).

        Raises:
            NotFoundError: for an unknown model or version.
            StateError: when a version to archive holds the ``production`` alias.
        """
        self._require_model(model_name)
        aliases = self._aliases(model_name)
        if version is None:
            with self.db.session() as session:
                targets = list(
                    session.scalars(
                        select(ModelVersionRecord)
                        .where(
                            ModelVersionRecord.model_name == model_name,
                            ModelVersionRecord.status == "active",
                        )
                        .order_by(ModelVersionRecord.id.desc())
                    )
                )
        else:
            targets = [self._resolve(model_name, version, aliases)]
        for record in targets:
            self._refuse_production(record, aliases, "archive")
        archived = []
        for record in targets:
            if record.status == "active":
                record = self._set_status(record, "archived", aliases)
                self._audit("registry.archived", model_name, record.semver, {})
            archived.append(self._version(record, {}))
        return archived

    def restore_model_version(self, model_name: str, version: str) -> ModelVersion:
        """Make an archived version active again (loadable and aliasable).

        Raises:
            NotFoundError: for an unknown model or version.
        """
        self._require_model(model_name)
        aliases = self._aliases(model_name)
        record = self._resolve(model_name, version, aliases)
        if record.status == "archived":
            record = self._set_status(record, "active", aliases)
            self._audit("registry.restored", model_name, record.semver, {})
        return self._version(record, aliases)

    def _set_status(
        self, record: ModelVersionRecord, status: str, aliases: Mapping[str, int]
    ) -> ModelVersionRecord:
        name, number = record.model_name, str(record.mlflow_version)
        with _translated(f"model {name!r}"):
            if status != "active":
                for alias, held_by in aliases.items():
                    if held_by == record.mlflow_version:
                        self.client.delete_registered_model_alias(name, alias)
            self.client.set_model_version_tag(name, number, STATUS_TAG, status)
        with self.db.session() as session:
            row = session.get(ModelVersionRecord, record.id)
            assert row is not None
            row.status = status
        logger.info("%s %s is now %s", name, record.semver, status)
        return row

    def _refuse_production(
        self, record: ModelVersionRecord, aliases: Mapping[str, int], action: str
    ) -> None:
        if aliases.get("production") == record.mlflow_version:
            raise StateError(
                problem(
                    f"a version to {action} that does not serve production",
                    f"{record.semver!r}, which holds the 'production' alias",
                    _ROLLBACK_FIX,
                    subject=f"model {record.model_name!r}",
                )
            )

    def _refuse_ungoverned(self, record: ModelVersionRecord) -> None:
        """Refuse the ``production`` alias for a version governance has not cleared."""
        with self.db.session() as session:
            cleared = has_approved_request(
                session, record.model_name, record.semver
            ) or is_active_deployment(session, record.model_name, record.semver)
        if not cleared:
            self._audit("alias.refused", record.model_name, record.semver, {"alias": "production"})
            raise StateError(
                problem(
                    f"an approved request to deploy {record.model_name} {record.semver} to "
                    "production before it holds the 'production' alias",
                    "no approved request",
                    "request approval (`retailml governance request ...`), have every listed "
                    "approver approve it, then deploy it (`retailml deploy --environment "
                    "production ...` or `retailml promote`)",
                    subject=f"model {record.model_name!r}",
                )
            )

    def _semver_of(self, model_name: str, mlflow_version: int | None) -> str | None:
        if mlflow_version is None:
            return None
        with self.db.session() as session:
            return session.scalars(
                select(ModelVersionRecord.semver).where(
                    ModelVersionRecord.model_name == model_name,
                    ModelVersionRecord.mlflow_version == mlflow_version,
                )
            ).first()

    def _audit(
        self,
        action: str,
        model_name: str,
        version: str,
        details: Mapping[str, Any],
        *,
        actor: str | None = None,
    ) -> None:
        append_audit(self.db, action, version_subject(model_name, version), details, actor=actor)

    # --- helpers ------------------------------------------------------------------------------

    def _tracking(self) -> str:
        if self._tracking_uri is None:
            self._tracking_uri = str(self.client.tracking_uri)
        return self._tracking_uri

    def _require_model(self, model_name: str) -> None:
        """Raise NotFoundError unless the model has a version not deleted."""
        _check_name(model_name)
        with self.db.session() as session:
            names = set(
                session.scalars(
                    select(ModelVersionRecord.model_name)
                    .where(ModelVersionRecord.status != "deleted")
                    .distinct()
                )
            )
        if model_name not in names:
            raise NotFoundError(
                problem(
                    "a registered model",
                    f"{model_name!r}; registered: {', '.join(sorted(names)) or 'none'}",
                    "register it with registry.register_model(...) or check the name",
                    subject="model_name",
                )
            )

    def _aliases(self, model_name: str) -> dict[str, int]:
        """``alias -> MLflow version`` of a model (empty when MLflow does not know it)."""
        try:
            model = self.client.get_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise _translate(exc, f"model {model_name!r}") from exc
        return {alias: int(number) for alias, number in (model.aliases or {}).items()}

    def _resolve(
        self, model_name: str, version: str | None, aliases: Mapping[str, int]
    ) -> ModelVersionRecord:
        with self.db.session() as session:
            rows = list(
                session.scalars(
                    select(ModelVersionRecord)
                    .where(
                        ModelVersionRecord.model_name == model_name,
                        ModelVersionRecord.status != "deleted",
                    )
                    .order_by(ModelVersionRecord.id.desc())
                )
            )
        by_number = {row.mlflow_version: row for row in rows}
        if version is None:
            if aliases.get("production") in by_number:
                return by_number[aliases["production"]]
            active = [row for row in rows if row.status == "active"]
            if active:
                return active[0]
        elif is_semver(version):
            found = next((row for row in rows if row.semver == version), None)
            if found is not None:
                return found
        elif version in aliases and aliases[version] in by_number:
            return by_number[aliases[version]]
        held = {a: by_number[n].semver for a, n in aliases.items() if n in by_number}
        raise NotFoundError(
            problem(
                "a version (semantic version or alias) of model " + repr(model_name),
                f"{version!r}; versions: {', '.join(row.semver for row in rows) or 'none'}; "
                f"aliases: {', '.join(f'{a} -> {v}' for a, v in sorted(held.items())) or 'none'}",
                "pass one of those, or set the alias with registry.set_alias(...)",
                subject="version",
            )
        )

    def _version(self, record: ModelVersionRecord, aliases: Mapping[str, int]) -> ModelVersion:
        return ModelVersion(
            model_name=record.model_name,
            version=record.semver,
            mlflow_version=record.mlflow_version,
            status=record.status,
            aliases=tuple(
                sorted(a for a, number in aliases.items() if number == record.mlflow_version)
            ),
            digest=record.digest,
            model_uri=record.model_uri,
            run_id=record.run_id,
            metadata=dict(record.meta),
            tags=dict(record.tags),
            created_at=Instant.of(record.created_at),
            created_by=record.created_by,
            last_used_at=Instant.of(record.last_used_at) if record.last_used_at else None,
        )


# --- module helpers ---------------------------------------------------------------------------


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _check_name(model_name: object) -> None:
    if not isinstance(model_name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,255}", model_name):
        raise ConfigError(
            problem(
                "a model name of letters, digits, '_', '.', '-' (at most 255)",
                repr(model_name),
                "pass e.g. model_name='sales_forecast_prophet'",
                subject="model_name",
            )
        )


def _check_alias(alias: object) -> None:
    if alias not in ALIASES:
        raise ConfigError(
            problem(
                f"an alias among {', '.join(ALIASES)}",
                repr(alias),
                "use one of those",
                subject="alias",
            )
        )


def _tag_map(tags: Sequence[str] | Mapping[str, Any] | None) -> dict[str, str]:
    if tags is None:
        return {}
    if isinstance(tags, str):
        raise ConfigError(
            problem(
                "a list of tag names or a name -> value mapping",
                repr(tags),
                f"pass tags=[{tags!r}]",
                subject="tags",
            )
        )
    if isinstance(tags, Mapping):
        pairs = [(key, value) for key, value in tags.items()]
    else:
        pairs = [(name, "true") for name in tags]
    out: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not key or key.startswith(TAG_PREFIX):
            raise ConfigError(
                problem(
                    f"tag names that are non-empty strings not starting with {TAG_PREFIX!r}",
                    repr(key),
                    "rename the tag",
                    subject="tags",
                )
            )
        out[key] = (
            value if isinstance(value, str) else json.dumps(json_safe(value, f"tags[{key!r}]"))
        )
    return out


def _translate(exc: MlflowException, subject: str) -> RetailMLError:
    message = problem(
        "MLflow's registry to accept the request",
        f"{exc.error_code}: {exc.message}",
        "check the name, version and tracking URI (RETAILML_MLFLOW_TRACKING_URI)",
        subject=subject,
    )
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return NotFoundError(message)
    if exc.error_code == "INVALID_PARAMETER_VALUE":
        return ConfigError(message)
    return StateError(message)


@contextlib.contextmanager
def _translated(subject: str) -> Iterator[None]:
    """Translate MLflow's exceptions into retailml's at the boundary."""
    try:
        yield
    except MlflowException as exc:
        raise _translate(exc, subject) from exc
