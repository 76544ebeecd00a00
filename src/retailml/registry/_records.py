"""What the registry returns: model versions, registered models, and JSON-safe metadata."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from retailml.core.errors import DataValidationError, problem


class Instant(dt.datetime):
    """A timezone-aware UTC datetime that also compares with naive datetimes.

    The guide's cleanup script compares registry times with ``datetime.now()``
    (naive, local time). Plain aware datetimes raise ``TypeError`` there, so
    the registry's times treat a naive operand as local time, as
    ``datetime.astimezone`` does. Everything else is an ordinary datetime.
    """

    @classmethod
    def of(cls, value: dt.datetime) -> Instant:
        """``value`` as an Instant (a naive value is taken as UTC, as the database stores it)."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return cls(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            tzinfo=dt.UTC,
        )

    @staticmethod
    def _aware(other: object) -> object:
        if isinstance(other, dt.datetime) and other.tzinfo is None:
            return other.astimezone()
        return other

    def __lt__(self, other: object) -> bool:
        return super().__lt__(self._aware(other))  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        return super().__le__(self._aware(other))  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        return super().__gt__(self._aware(other))  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        return super().__ge__(self._aware(other))  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        return super().__eq__(self._aware(other))

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = dt.datetime.__hash__


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model.

    Attributes:
        model_name: The registered model.
        version: The semantic version (``"1.2.0"``).
        mlflow_version: MLflow's integer version of the same model version.
        status: ``"active"``, ``"archived"`` or ``"deleted"``.
        aliases: Aliases pointing at it (``production``, ``staging``, ``canary``).
        digest: SHA-256 of the model directory, checked before every load.
        model_uri: Where MLflow stores the artifact (the version's source).
        run_id: The MLflow run that trained it, when known.
        metadata: The metadata given at registration, JSON-safe.
        tags: The tags given at registration (a list ``[t]`` becomes ``{t: "true"}``).
        created_at: Registration time (UTC).
        created_by: Who registered it.
        last_used_at: Last load through the registry, or None.
    """

    model_name: str
    version: str
    mlflow_version: int
    status: str
    aliases: tuple[str, ...]
    digest: str
    model_uri: str
    run_id: str | None
    metadata: dict[str, Any]
    tags: dict[str, str]
    created_at: Instant
    created_by: str
    last_used_at: Instant | None

    @property
    def registry_uri(self) -> str:
        """``models:/<name>/<mlflow_version>``: the version in MLflow's registry."""
        return f"models:/{self.model_name}/{self.mlflow_version}"

    @property
    def last_used(self) -> Instant:
        """When it was last loaded, or its registration time if never."""
        return self.last_used_at or self.created_at


@dataclasses.dataclass(frozen=True)
class RegisteredModel:
    """A registered model and a summary of its versions.

    Attributes:
        name: The model name.
        latest_version: The newest semantic version not deleted.
        environment: ``"production"`` when a version holds the production
            alias, else ``"staging"`` when one holds the staging alias, else ``"none"``.
        aliases: ``alias -> semantic version``.
        versions: The semantic versions not deleted, newest first.
        created_at: When its first version was registered.
        last_used: The latest load of any version, or the latest registration if none.
    """

    name: str
    latest_version: str
    environment: str
    aliases: dict[str, str]
    versions: tuple[str, ...]
    created_at: Instant
    last_used: Instant


def json_safe(value: Any, path: str = "metadata") -> Any:
    """``value`` as plain JSON: datetimes as ISO 8601, numpy scalars as numbers, NaN as null.

    Mappings (string keys), sequences and sets, numbers, strings, booleans,
    None, dates and times, timedeltas (seconds), decimals, UUIDs, paths,
    enums, dataclasses, numpy scalars and arrays, and pandas objects with
    ``to_dict`` are converted; anything else is refused.

    Raises:
        DataValidationError: naming the key path of a value that has no JSON form.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value), path)
    if isinstance(value, enum.Enum):
        return json_safe(value.value, path)
    if isinstance(value, uuid.UUID | PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value), path)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool):
                raise DataValidationError(
                    problem(
                        "string keys",
                        f"key {key!r} of type {type(key).__name__}",
                        "use string keys",
                        subject=path,
                    )
                )
            out[str(key)] = json_safe(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [json_safe(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [json_safe(item, f"{path}[...]") for item in value]
        return sorted(items, key=repr)
    # numpy and pandas without importing them: Series and frames have to_dict(),
    # arrays and numpy scalars tolist(), other scalars item().
    for method in ("to_dict", "tolist", "item", "isoformat"):
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                converted = convert()
            except (TypeError, ValueError):
                continue
            if converted is not value:
                return json_safe(converted, path)
    raise DataValidationError(
        problem(
            "JSON-serialisable metadata (mappings, lists, numbers, strings, dates)",
            f"{type(value).__name__} {value!r}"[:200],
            "convert the value to a plain type (e.g. str(...) or float(...))",
            subject=path,
        )
    )
