"""retailml's settings: each declared once, with its type, default and doc.

Values come, highest priority first, from keyword arguments, ``RETAILML_*``
environment variables, and a YAML file (``retailml.yaml`` in the current
directory, or the file named by ``RETAILML_CONFIG``). Invalid values are
reported all at once, each naming the setting, the bad value and what is
allowed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from retailml.core.errors import ConfigError, problem

ENV_PREFIX = "RETAILML_"
CONFIG_FILE_ENV = "RETAILML_CONFIG"
DEFAULT_CONFIG_FILE = "retailml.yaml"


def config_file() -> Path:
    """The YAML settings file in effect (it need not exist)."""
    return Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))


class Settings(BaseSettings):
    """All retailml settings. Environment variable: ``RETAILML_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
    )

    home: Path = Field(
        default=Path("workspace"),
        description="Workspace directory: everything a run writes lives under it.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "Platform database URL (SQLAlchemy form, e.g. postgresql+psycopg://user@host/db); "
            "empty means a SQLite file at <home>/platform.db."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe log level written to <home>/logs."
    )
    seed: int = Field(
        default=42, ge=0, description="Default random seed for generation, splits and training."
    )
    date_format: str | None = Field(
        default=None,
        description=(
            "strftime format of source dates (e.g. %Y%m%d); empty means ISO 8601 or "
            "UCI's month/day/year."
        ),
    )
    online_store: Literal["sqlite", "redis"] = Field(
        default="sqlite",
        description=(
            "Feast online store for serving features: SQLite in <home>/feature_repo, or Redis."
        ),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description=(
            "Redis for the online store (rediss:// for TLS); a password is written to "
            "feature_store.yaml as ${RETAILML_REDIS_PASSWORD}."
        ),
    )
    feast_project: str = Field(
        default="retailml",
        pattern=r"^[A-Za-z0-9_]+$",
        description=(
            "Feast project name; it prefixes online-store keys, so workspaces sharing "
            "one Redis need different projects."
        ),
    )
    stream_source: Literal["directory", "redis"] = Field(
        default="directory",
        description=(
            "Where 'retailml features stream' reads transaction events: JSON-lines files "
            "dropped into <home>/stream/incoming, or the Redis stream stream_name on redis_url."
        ),
    )
    stream_name: str = Field(
        default="retailml:transactions",
        min_length=1,
        description=(
            "Redis stream key of transaction events (stream_source redis), read by the "
            "consumer group retailml-features; dead letters go to <stream_name>:dead."
        ),
    )
    db_busy_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds a SQLite writer waits for a lock before failing."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description=(
            "MLflow tracking URI (e.g. postgresql://user@host/mlflow or http://mlflow:5000); "
            "empty means sqlite:///<home>/mlflow.db with artifacts in <home>/mlartifacts. "
            "MLFLOW_TRACKING_URI, when set, wins."
        ),
    )
    optuna_storage: str | None = Field(
        default=None,
        description=(
            "Optuna RDB storage URL shared by tuning workers (e.g. "
            "postgresql+psycopg://user@host/optuna); empty means in-process studies."
        ),
    )
    lineage_url: str | None = Field(
        default=None,
        description=(
            "OpenLineage HTTP endpoint (Marquez-compatible, e.g. http://marquez:5000) that "
            "also receives every lineage event; they always go to <home>/lineage/events.jsonl."
        ),
    )
    lineage_namespace: str = Field(
        default="retailml",
        min_length=1,
        description="OpenLineage namespace of retailml's jobs and datasets.",
    )

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "API keys accepted in the X-API-Key header of the prediction endpoints, "
            "comma-separated; empty means prediction requests are refused (401)."
        ),
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token of the serving admin endpoints (deployments, rollback, A/B tests); "
            "empty means they are refused (401)."
        ),
    )
    serve_host: str = Field(default="127.0.0.1", description="Address 'retailml serve' listens on.")
    serve_port: int = Field(
        default=8000, ge=1, le=65535, description="Port 'retailml serve' listens on."
    )
    serve_workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes of 'retailml serve'."
    )
    serve_environment: Literal["production", "staging"] = Field(
        default="production",
        description="Deployment environment the prediction service routes requests to.",
    )
    serve_default_model: str = Field(
        default="sales_forecast",
        min_length=1,
        description="Model served when a prediction request names none.",
    )
    serve_routing_ttl_s: float = Field(
        default=2.0,
        gt=0,
        description=(
            "Seconds between reloads of deployments, rollouts and A/B tests by the "
            "prediction service (how soon a new version takes traffic)."
        ),
    )
    prediction_log_queue_size: int = Field(
        default=10000,
        ge=1,
        description=(
            "Prediction-log entries held in memory before they are written in a batch; "
            "when full, new entries are dropped and counted."
        ),
    )
    alert_channels: str = Field(
        default="log,database",
        description=(
            "Comma-separated alert channels: log (always on), database (the alerts table), "
            "webhook (Slack-compatible JSON to alert_webhook_url), email (SMTP)."
        ),
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description=(
            'URL the webhook channel POSTs {"text": ...} to (e.g. a Slack incoming webhook).'
        ),
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP server of the email alert channel."
    )
    smtp_port: int = Field(
        default=25, ge=1, le=65535, description="Port of the SMTP server of the email channel."
    )
    smtp_from: str = Field(
        default="retailml@localhost", description="Sender address of alert e-mails."
    )
    alert_email_to: str | None = Field(
        default=None, description="Comma-separated recipients of alert e-mails."
    )
    alert_cooldown_s: float = Field(
        default=300.0,
        ge=0,
        description=(
            "Seconds during which a repeat of an open alert (same type, model, version and "
            "severity) only raises its count instead of notifying the channels again."
        ),
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("alert_channels")
    @classmethod
    def _known_channels(cls, value: str) -> str:
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = [name for name in names if name not in ("log", "database", "webhook", "email")]
        if unknown:
            raise ValueError(
                f"a comma-separated list of log, database, webhook, email (unknown: {unknown})"
            )
        return ",".join(names)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("a sqlite:/// or postgresql:// URL")
        if value.startswith("postgresql://"):
            # psycopg 3 is the driver retailml installs.
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("a redis:// or rediss:// URL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=config_file())
        return (init_settings, env_settings, yaml_source)

    @property
    def resolved_database_url(self) -> str:
        """The platform database URL, defaulting to SQLite in the workspace."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'platform.db').resolve()}"


def _describe(error: dict[str, Any]) -> str:
    name = ".".join(str(part) for part in error["loc"]) or "<settings>"
    setting = f"{ENV_PREFIX}{name.upper()}" if error["loc"] else name
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(Settings.model_fields))
        return f"{name}: unknown setting (got {error['input']!r}); known settings: {known}"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
    return f"{setting}: got {error['input']!r}; expected {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate all settings.

    Args:
        **overrides: Values that win over the environment and the YAML file.

    Raises:
        ConfigError: If any setting is invalid; lists every problem at once.
    """
    path = config_file()
    if path.exists():
        try:
            import yaml

            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except Exception as exc:
            raise ConfigError(
                f"{path}: expected a YAML mapping of setting: value; could not parse it ({exc}). "
                "Fix the YAML syntax."
            ) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a YAML mapping of setting: value; got a "
                f"{type(loaded).__name__}. Write one 'name: value' per line."
            )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [_describe(dict(err)) for err in exc.errors()]
        count = len(problems)
        header = f"{count} invalid setting{'s' if count != 1 else ''}"
        body = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{header}:\n{body}\nFix them in the environment or in {path}.") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()


#: Settings whose values are secrets: never printed or audited in clear.
SECRET_SETTINGS = frozenset({"api_keys", "admin_token"})
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def masked_setting(name: str, value: Any) -> Any:
    """A setting's value safe to print or audit: secrets as ``***``, URL passwords hidden."""
    if value is None:
        return None
    if name in SECRET_SETTINGS or isinstance(value, SecretStr):
        return "***"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


@dataclass(frozen=True)
class SettingChange:
    """What :func:`set_config_value` wrote.

    Attributes:
        path: The YAML settings file written.
        name: The setting.
        old: Its value in effect before (masked).
        new: Its new value (masked).
        overridden: The environment variable that still wins over the file, if set.
    """

    path: Path
    name: str
    old: Any
    new: Any
    overridden: str | None


def set_config_value(name: str, value: str) -> SettingChange:
    """Validate one setting and write it into the YAML settings file (atomically).

    Args:
        name: The setting, e.g. ``serve_port`` (``RETAILML_SERVE_PORT`` works too).
        value: Its value as text, read as YAML (``8001`` is a number, ``""`` unsets it).

    Raises:
        ConfigError: for an unknown setting (listing the valid ones), an invalid
            value (saying what is allowed) or an unreadable settings file.
    """
    import yaml

    from retailml.core.io import atomic_write_text

    key = name.strip().lower().removeprefix(ENV_PREFIX.lower())
    if key not in Settings.model_fields:
        raise ConfigError(
            problem(
                f"a setting among {', '.join(sorted(Settings.model_fields))}",
                repr(name),
                "pick one of those (retailml config show lists them with their meaning)",
                subject="retailml config set",
            )
        )
    parsed: Any = None if value.strip() == "" else yaml.safe_load(value)
    path = config_file()
    data: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                problem("a YAML mapping of setting: value", type(loaded).__name__, "fix the file")
                + f" ({path})"
            )
        data = dict(loaded or {})
    try:
        old = masked_setting(key, getattr(load_settings(), key))
    except ConfigError:
        old = masked_setting(key, data.get(key))
    updated = {**data, key: parsed}
    if parsed is None:
        updated.pop(key)
    try:
        checked = Settings(**updated)
    except ValidationError as exc:
        problems = "; ".join(_describe(dict(err)) for err in exc.errors())
        raise ConfigError(
            problem(
                f"a valid value for {key} ({Settings.model_fields[key].description})",
                f"{value!r}: {problems}",
                "correct the value",
                subject="retailml config set",
            )
        ) from exc
    atomic_write_text(path, yaml.safe_dump(updated, sort_keys=True, allow_unicode=True))
    get_settings.cache_clear()
    env = f"{ENV_PREFIX}{key.upper()}"
    return SettingChange(
        path=path,
        name=key,
        old=old,
        new=masked_setting(key, getattr(checked, key)),
        overridden=env if env in os.environ else None,
    )
