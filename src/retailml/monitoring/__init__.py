"""Monitoring of deployed models: performance, concept and data drift, alerts.

The public faces are :mod:`retailml.monitoring.model_monitor` (the guide's
``ModelMonitor``) and :mod:`retailml.monitoring.alerts` (``AlertManager``);
:func:`monitoring_gauges` gives the current state of every model as gauge
samples for the serving layer's Prometheus endpoint and the dashboard.
"""

from __future__ import annotations

from retailml.monitoring._gauges import GaugeSample, monitoring_gauges
from retailml.monitoring._performance import ConceptDriftResult
from retailml.monitoring.alerts import Alert, AlertManager
from retailml.monitoring.model_monitor import ModelMonitor

__all__ = [
    "Alert",
    "AlertManager",
    "ConceptDriftResult",
    "GaugeSample",
    "ModelMonitor",
    "monitoring_gauges",
]
