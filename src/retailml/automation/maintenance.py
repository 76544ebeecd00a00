"""Maintenance: the guide's data-freshness check and model cleanup policy.

The weekly ``scripts/retrain_models.sh`` of the guide starts with a freshness
check and ``scripts/cleanup_models.py`` retires old models; both are library
calls here and ``retailml maintenance`` commands::

    from retailml.automation.maintenance import CleanupPolicy, check_freshness, run_cleanup
    from retailml.deployment.model_server import ModelRegistry

    report = check_freshness(max_age=timedelta(days=2))
    if report.stale:
        raise SystemExit(report.summary())

    with ModelRegistry() as registry:
        plan = run_cleanup(registry, CleanupPolicy.of(keep=5, older_than="30d",
                                                      archive_unused="90d"), dry_run=True)
        for action in plan.actions:
            print(action.action, action.model_name, action.version, action.reason)

Cleanup never touches a version that serves: see :mod:`retailml.automation._cleanup`
for what counts as serving and as a use; :mod:`retailml.automation._freshness`
for what makes data stale.
"""

from __future__ import annotations

from retailml.automation._cleanup import (
    CleanupAction,
    CleanupPolicy,
    CleanupReport,
    ProtectedVersion,
    last_use,
    plan_cleanup,
    protected_versions,
    run_cleanup,
)
from retailml.automation._durations import format_age, parse_age
from retailml.automation._freshness import FreshnessItem, FreshnessReport, check_freshness

__all__ = [
    "CleanupAction",
    "CleanupPolicy",
    "CleanupReport",
    "FreshnessItem",
    "FreshnessReport",
    "ProtectedVersion",
    "check_freshness",
    "format_age",
    "last_use",
    "parse_age",
    "plan_cleanup",
    "protected_versions",
    "run_cleanup",
]
