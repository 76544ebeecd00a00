"""Online store configuration of the generated Feast repository (no Feast import).

The online store is chosen by the ``FeatureStore`` arguments, else the
``online_store`` and ``redis_url`` settings (``RETAILML_ONLINE_STORE``,
``RETAILML_REDIS_URL``); this module validates and translates them for Feast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from retailml.core.errors import ConfigError, problem

OnlineStoreKind = Literal["sqlite", "redis"]
ONLINE_STORES: tuple[OnlineStoreKind, ...] = ("sqlite", "redis")
ONLINE_STORE_ENV = "RETAILML_ONLINE_STORE"
REDIS_URL_ENV = "RETAILML_REDIS_URL"
#: Environment variable the generated YAML reads a Redis password from.
REDIS_PASSWORD_ENV = "RETAILML_REDIS_PASSWORD"

REGISTRY_FILE = "registry.db"
ONLINE_SQLITE_FILE = "online_store.db"


@dataclass(frozen=True)
class OnlineStoreSpec:
    """Which online store the repository uses.

    Attributes:
        kind: ``sqlite`` (a file in the repository) or ``redis``.
        redis_url: ``redis://[user:password@]host[:port][/db]`` (``rediss://``
            for TLS); used when ``kind`` is ``redis``.
    """

    kind: OnlineStoreKind
    redis_url: str

    @property
    def store_id(self) -> str:
        """A stable name of the store's location, without credentials."""
        if self.kind == "sqlite":
            return "sqlite"
        parts = urlsplit(self.redis_url)
        host = parts.hostname or "127.0.0.1"
        return f"{parts.scheme}://{host}:{parts.port or 6379}/{_redis_db(self.redis_url)}"

    def feast_config(self, *, for_disk: bool) -> dict[str, Any]:
        """The ``online_store`` section of ``feature_store.yaml``."""
        if self.kind == "sqlite":
            return {"type": "sqlite", "path": ONLINE_SQLITE_FILE}
        return {
            "type": "redis",
            "connection_string": redis_connection_string(self.redis_url, for_disk=for_disk),
        }


def _redis_db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path else 0


def redis_connection_string(url: str, *, for_disk: bool = False) -> str:
    """Translate a ``redis://`` URL into Feast's ``host:port,db=N,...`` form.

    Args:
        url: ``redis://[user:password@]host[:port][/db]`` or ``rediss://...``.
        for_disk: Write a password as ``${RETAILML_REDIS_PASSWORD}`` instead.

    Raises:
        ConfigError: If the URL is not a Redis URL.
    """
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if (
        parts.scheme not in ("redis", "rediss")
        or not parts.hostname
        or not (path == "" or path.isdigit())
    ):
        raise ConfigError(
            problem(
                "a Redis URL like redis://127.0.0.1:6379/0",
                repr(url),
                "set RETAILML_REDIS_URL (or redis_url=) to redis://host:port/db",
                subject="RETAILML_REDIS_URL",
            )
        )
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(
            problem(
                "a numeric Redis port",
                repr(url),
                "fix the port in RETAILML_REDIS_URL",
                subject="RETAILML_REDIS_URL",
            )
        ) from exc
    options = [f"{parts.hostname}:{port}", f"db={_redis_db(url)}"]
    if parts.username:
        options.append(f"username={unquote(parts.username)}")
    if parts.password:
        password = f"${{{REDIS_PASSWORD_ENV}}}" if for_disk else unquote(parts.password)
        options.append(f"password={password}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


def repo_config_data(project: str, online: OnlineStoreSpec, *, for_disk: bool) -> dict[str, Any]:
    """The content of ``feature_store.yaml`` as a dict."""
    return {
        "project": project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": REGISTRY_FILE, "cache_ttl_seconds": 60},
        "offline_store": {"type": "file"},
        "online_store": online.feast_config(for_disk=for_disk),
        "entity_key_serialization_version": 3,
    }


def resolve_online_store(kind: str, redis_url: str) -> OnlineStoreSpec:
    """The online store named by the arguments (the settings supply the defaults).

    Raises:
        ConfigError: If the store kind is unknown or the Redis URL malformed.
    """
    chosen = kind
    if chosen not in ONLINE_STORES:
        raise ConfigError(
            problem(
                f"one of {list(ONLINE_STORES)}",
                repr(chosen),
                f"set {ONLINE_STORE_ENV} (or online_store=) to sqlite or redis",
                subject=ONLINE_STORE_ENV,
            )
        )
    url = redis_url
    redis_connection_string(url)  # validates
    return OnlineStoreSpec(kind=chosen, redis_url=url)
