"""Loaded model versions, kept in memory and loaded once each (off the event loop).

Loading goes through :func:`retailml.deployment.predictor.get_model_predictor`
(the registry verifies the artifact digest). A forecaster's default forecast
is computed while loading, so its first request is already a cache hit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from retailml.deployment.predictor import Predictor, get_model_predictor

logger = logging.getLogger("retailml.serving.models")


class ModelCache:
    """``(model name, version) -> Predictor``; each version loaded by one thread at a time.

    Args:
        registry: The :class:`~retailml.registry.model_registry.ModelRegistry` to load through.
        limit: Versions kept; beyond it the least recently loaded ones that
            ``keep`` (the routing table) does not name are evicted.
    """

    def __init__(self, registry: Any, *, limit: int = 32) -> None:
        self.registry = registry
        self.limit = limit
        self._models: dict[tuple[str, str], Predictor] = {}
        self._lock = threading.Lock()  # the registry is used by one loader at a time

    def get(self, model_name: str, version: str) -> Predictor | None:
        """The loaded version, or None (a dictionary lookup)."""
        return self._models.get((model_name, version))

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._models

    def loaded(self) -> list[tuple[str, str]]:
        """The loaded versions."""
        return list(self._models)

    def load_sync(self, model_name: str, version: str) -> Predictor:
        """Load a version (or return the loaded one); blocks."""
        key = (model_name, version)
        found = self._models.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._models.get(key)
            if found is not None:
                return found
            predictor = get_model_predictor(model_name, version, registry=self.registry)
            if predictor.is_forecast:
                predictor.forecast_all(None, 0.95)  # warm the default forecast
            models = dict(self._models)
            models[key] = predictor
            self._models = models  # readers see the old dict or the new one
            logger.info("loaded %s %s (%s)", model_name, version, predictor.model_type)
            return predictor

    async def load(self, model_name: str, version: str) -> Predictor:
        """:meth:`load_sync` in a worker thread."""
        found = self._models.get((model_name, version))
        if found is not None:
            return found
        return await asyncio.to_thread(self.load_sync, model_name, version)

    def retain(self, keep: set[tuple[str, str]]) -> None:
        """Evict versions beyond the limit that ``keep`` does not name (oldest first)."""
        if len(self._models) <= self.limit:
            return
        with self._lock:
            models = dict(self._models)
            for key in list(models):
                if len(models) <= self.limit:
                    break
                if key not in keep:
                    del models[key]
            self._models = models
