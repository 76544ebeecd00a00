"""The workspace: every path a run writes, under ``RETAILML_HOME``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retailml.core.settings import Settings, get_settings

#: Directories created by ``retailml init``, relative to the workspace root.
LAYOUT: tuple[str, ...] = (
    "data/landing",
    "data/bronze",
    "data/silver",
    "data/quarantine",
    "features",
    "feature_repo",
    "stream",
    "mlartifacts",
    "lineage",
    "reports",
    "logs",
    "tmp",
)


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. Construct with :meth:`from_settings`."""

    root: Path

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Workspace:
        """The workspace named by the settings (``RETAILML_HOME``)."""
        settings = settings or get_settings()
        return cls(settings.home.resolve())

    @property
    def landing(self) -> Path:
        """Source files as they arrive, before ingestion (the demo writes here)."""
        return self.root / "data" / "landing"

    @property
    def bronze(self) -> Path:
        """Raw data as read, with ingestion metadata."""
        return self.root / "data" / "bronze"

    @property
    def silver(self) -> Path:
        """Typed, cleaned tables (Parquet)."""
        return self.root / "data" / "silver"

    @property
    def quarantine(self) -> Path:
        """Rows that could not be used, each with a reason."""
        return self.root / "data" / "quarantine"

    @property
    def features(self) -> Path:
        """Feature tables."""
        return self.root / "features"

    @property
    def feature_repo(self) -> Path:
        """The generated Feast repository."""
        return self.root / "feature_repo"

    @property
    def stream(self) -> Path:
        """The stream consumer's events (``incoming/``, ``processed/``), state and dead letters."""
        return self.root / "stream"

    @property
    def mlflow_db(self) -> Path:
        """MLflow's tracking and registry store."""
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        """MLflow artifacts."""
        return self.root / "mlartifacts"

    @property
    def platform_db(self) -> Path:
        """The embedded platform database (when no database URL is set)."""
        return self.root / "platform.db"

    @property
    def lineage(self) -> Path:
        """OpenLineage event files."""
        return self.root / "lineage"

    @property
    def reports(self) -> Path:
        """Data-quality, performance and drift reports."""
        return self.root / "reports"

    @property
    def logs(self) -> Path:
        """Log files."""
        return self.root / "logs"

    @property
    def tmp(self) -> Path:
        """Staging area for atomic writes; same file system as the outputs."""
        return self.root / "tmp"

    @property
    def transactions(self) -> Path:
        """The silver transactions table: one Parquet part per ingested file."""
        return self.silver / "transactions"

    def exists(self) -> bool:
        """Whether every directory of the layout exists."""
        return all((self.root / rel).is_dir() for rel in LAYOUT)

    def init(self) -> list[Path]:
        """Create the layout (idempotent).

        Returns:
            The directories that did not exist before.
        """
        created = []
        for rel in LAYOUT:
            path = self.root / rel
            if not path.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                created.append(path)
        return created
