"""Feature versions, manifests and the ``_latest`` pointer.

Layout of one feature set under ``Workspace.features``::

    <feature_set>/
        _latest                      the current version (one line, written atomically)
        <version>/
            _manifest.json           what the version holds and how it was made
            year=2011/month=12/*.parquet

A version is the first 16 hex digits of the SHA-256 of the definition's SQL,
its parameters and the input data version, so the same definition over the
same data is the same version and any change gives a new one. A version
directory appears in one rename, complete with its manifest; older versions
stay in place and readable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retailml.core.errors import NotFoundError, StateError, problem
from retailml.core.io import atomic_write_text

MANIFEST = "_manifest.json"
LATEST = "_latest"
#: Bump to give every feature set a new version when the output format changes.
LAYOUT_VERSION = 1


def definition_hash(sql: str) -> str:
    """Hex SHA-256 of a definition's SQL text."""
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def feature_version(sql: str, parameters: dict[str, Any], input_data_version: str) -> str:
    """The version of a feature set computed by ``sql`` over one input data version.

    Args:
        sql: The definition's SQL text.
        parameters: Everything else that shapes the output (definition
            parameters, partitioning); JSON-serialisable.
        input_data_version: The version of the silver transactions read.

    Returns:
        16 hex digits.
    """
    payload = json.dumps(
        {
            "layout": LAYOUT_VERSION,
            "sql": sql,
            "parameters": parameters,
            "input": input_data_version,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """What one published version of a feature set holds (``_manifest.json``)."""

    feature_set: str
    version: str
    row_count: int
    columns: dict[str, str]
    entity_keys: list[str]
    timestamp_column: str
    partitioning: list[str]
    parameters: dict[str, Any]
    definition_hash: str
    input_table: str
    input_data_version: str
    engine: str
    created_at: str
    validation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The manifest as indented JSON (columns in table order)."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, version_dir: Path) -> Manifest:
        """Read ``<version_dir>/_manifest.json``.

        Raises:
            NotFoundError: If the version has no manifest.
            StateError: If the manifest cannot be parsed.
        """
        path = version_dir / MANIFEST
        if not path.is_file():
            raise NotFoundError(
                problem(
                    "a published feature version with a manifest",
                    f"no {MANIFEST} in {str(version_dir)!r}",
                    "build the feature set with FeatureEngineeringPipeline.execute()",
                    subject=version_dir.parent.name,
                )
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise StateError(
                problem(
                    "a feature manifest written by retailml",
                    f"an unreadable file ({exc})",
                    "rebuild the feature set with execute(force=True)",
                    subject=str(path),
                )
            ) from exc


def latest_version(feature_dir: Path) -> str | None:
    """The version ``_latest`` names, or None before the first publish."""
    path = feature_dir / LATEST
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def set_latest(feature_dir: Path, version: str) -> None:
    """Point ``_latest`` at ``version`` (atomically)."""
    atomic_write_text(feature_dir / LATEST, version + "\n")
