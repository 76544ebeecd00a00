"""A/B tests of competing models: sticky assignment, observations, statistics, conclusion.

The guide's A/B deployment, as written::

    ab_manager = ABTestManager()
    ab_test = await ab_manager.create_test(
        test_name="prophet_vs_xgboost",
        models={
            "control": {"name": "sales_forecast_prophet", "version": "1.2.0",
                        "traffic_percentage": 70},
            "treatment": {"name": "sales_forecast_xgboost", "version": "1.0.0",
                          "traffic_percentage": 30},
        },
        success_metrics=["mape", "mae", "latency"],
        test_duration_days=14,
    )

and then, in serving and in evaluation jobs::

    arm = ab_manager.assign("prophet_vs_xgboost", store_id)        # "control" or "treatment"
    model = ab_manager.get_test("prophet_vs_xgboost").arm(arm)     # model_name, model_version
    ab_manager.record("prophet_vs_xgboost", "mape", 0.104, entity_key=store_id)
    results = ab_manager.get_results("prophet_vs_xgboost")        # per arm, per metric, winner
    await ab_manager.conclude("prophet_vs_xgboost", promote=deploy)  # after test_duration_days

Definitions. ``models`` maps each arm name to ``{"name", "version",
"traffic_percentage"}`` (exactly those keys), or is a list of such mappings
with an optional ``"arm"`` key (default: the model name). There are at least
two arms with distinct names; the percentages are positive, have at most two
decimals and sum to 100. The first arm is the **control**, the others are
challengers. ``success_metrics`` names at least one metric; the first is the
**primary** metric. Any name is allowed; each has a direction: lower is better
when a token of the name (split at non-alphanumerics) is an error, loss,
latency or cost word (``mape``, ``smape``, ``wape``, ``mase``, ``mae``,
``mse``, ``rmse``, ``rmsle``, ``error``, ``loss``, ``latency``, ``duration``,
``cost``, ``churn``, ``bounce``, ``abandonment``), higher is better otherwise
(``conversion_rate``, ``revenue``, ``accuracy``). Give a metric as
``{"name": "basket_size", "direction": "lower"}`` to override. Creating a test
that already exists with the same definition returns it (so a deployment
script can be re-run); with another definition it is a
:class:`~retailml.core.errors.StateError`.

Assignment. :meth:`ABTestManager.assign` hashes the entity key (a customer,
store or request key; ``str(key)``, so ``42`` and ``"42"`` are one entity)
with SHA-256 together with the test's random salt, takes the first 8 bytes of
the digest modulo 10,000 as a bucket, and returns the arm whose cumulative
share of the 10,000 buckets holds it (70/30: buckets 0-6999 control,
7000-9999 treatment). The same key always gets the same arm, in any process,
with no write: the salt is stored with the test. The salt makes tests
independent: an entity in one test's treatment is not more likely to be in
another's. SHA-256 is uniform, so the observed split over 10,000 keys is
within about one percentage point of the configured one.

Observations. :meth:`~ABTestManager.record` and
:meth:`~ABTestManager.record_many` store a value of a success metric for an
arm, given either the arm or the entity key (then the arm is the key's
assignment, and the key is stored only as its SHA-256). The tests below treat
every observation as independent, so record one value per entity and test
window (a store's MAPE over the window, a session's conversion), not many
correlated values of one entity.

Statistics (:meth:`~ABTestManager.get_results`). For every arm and metric:
``n``, mean, standard deviation and a confidence interval of the mean (Student
t; Wilson score for 0/1 values). For every challenger and metric, a
comparison with the control (``effect`` = challenger mean - control mean):

* **Welch's t-test** (``"welch_t"``; the p-value of
  ``scipy.stats.ttest_ind(..., equal_var=False)``), with the interval of the
  difference of means on the Welch–Satterthwaite degrees of freedom. Why:
  competing models have different error spreads and A/B splits are often
  unequal (90/10); Student's pooled t-test then has the wrong false-positive
  rate, Welch's does not, and it loses almost nothing when the variances are
  equal. Forecast errors, revenue and latency are skewed, but the test is on
  means, and at A/B sample sizes (hundreds of observations per arm) the
  central limit theorem makes the t approximation accurate.
* **Two-proportion z-test** (``"two_proportion_z"``) when every value of the
  metric in every arm is 0 or 1 (conversions, clicks): the pooled score test,
  identical to the 2x2 chi-square test without continuity correction and the
  standard test for rates. The interval of the difference of rates is
  **Newcombe's hybrid score interval** (method 10, from the two Wilson
  intervals) rather than Wald's, which undercovers with small counts or rates
  near 0 or 1 and can leave [-1, 1].

Tests are two-sided (either arm may be better). Every arm needs at least two
observations of a metric to be compared; otherwise the comparison has no
p-value. All challenger x metric p-values of a test are corrected together
with **Holm's step-down method**: it keeps the chance of any false
significance at ``1 - confidence`` without assuming the metrics are
independent (MAPE and MAE are not), and rejects everything Bonferroni rejects
and more. A comparison is ``significant`` when its adjusted p-value is below
``1 - confidence``; its interval is the unadjusted one at ``confidence``.

Winner. A challenger wins when it is significantly better than the control on
the primary metric and not significantly worse on any other success metric
(among several, the one with the largest primary improvement). The control
wins when every challenger is significantly worse than it on the primary
metric and none is significantly better on another metric. Otherwise there is
no winner, and ``reason`` says why. With equal arms a winner is declared in
at most ``1 - confidence`` of tests.

Conclusion. :meth:`~ABTestManager.conclude` computes the results, stores them
and the winner, marks the test ``concluded`` and, when given a ``promote``
callable (the deployment path), calls ``promote(model_name, model_version)``
for the winner, awaiting it if it returns an awaitable. Concluding before
``test_duration_days`` have passed needs ``force=True``: stopping a test as
soon as it looks significant inflates the false-positive rate far beyond
``1 - confidence``. Concluding again returns the stored outcome and never
promotes twice; if ``promote`` raises, the test stays concluded and
un-promoted and the next ``conclude(..., promote=...)`` retries it.
:meth:`~ABTestManager.stop` ends a test without a winner. A concluded or
stopped test accepts no more observations.

Governance. A running test splits production's live traffic, so creating one
needs an approved governance request for production for every arm's version
that is not already production's active deployment (a
:class:`~retailml.core.errors.StateError` naming the roles still to approve
otherwise); the winner's rollout goes through ``ModelServer.promote``, which
checks it again.

Errors: :class:`~retailml.core.errors.ConfigError` for a bad definition or
argument, :class:`~retailml.core.errors.DataValidationError` for bad
observations, :class:`~retailml.core.errors.NotFoundError` for an unknown test
(listing the existing ones), :class:`~retailml.core.errors.StateError` for an
operation the test's status forbids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import math
import numbers
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, cast

from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from retailml.core.db import PlatformDB, new_id, utcnow
from retailml.core.db_ab import ABObservation, ABTestRecord
from retailml.core.errors import (
    ConfigError,
    DataValidationError,
    NotFoundError,
    StateError,
    problem,
)
from retailml.core.settings import Settings, get_settings
from retailml.deployment._ab_stats import (
    ArmMetricStats,
    Direction,
    MetricComparison,
    Summary,
    analyze,
    default_direction,
)

__all__ = [
    "BUCKETS",
    "ABTest",
    "ABTestConclusion",
    "ABTestManager",
    "ABTestResults",
    "ArmMetricStats",
    "MetricComparison",
    "ModelArm",
    "SuccessMetric",
    "assign_bucket",
    "default_direction",
]

#: Assignment resolution: traffic percentages are cut into this many buckets.
BUCKETS = 10_000
Status = Literal["running", "concluded", "stopped"]
Promote = Callable[[str, str], Any]

_TEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_ARM_KEYS = ("name", "version", "traffic_percentage")
_INSERT_CHUNK = 5_000


@dataclass(frozen=True)
class ModelArm:
    """One arm of a test: the model version it serves and its share of traffic."""

    arm: str
    model_name: str
    model_version: str
    traffic_percentage: float


@dataclass(frozen=True)
class SuccessMetric:
    """A metric the test is judged on, and which way is better."""

    name: str
    direction: Direction

    @property
    def higher_is_better(self) -> bool:
        """True for ``direction == "higher"``."""
        return self.direction == "higher"


@dataclass(frozen=True)
class ABTest:
    """A stored A/B test.

    Attributes:
        name: Unique test name.
        arms: The arms, control first.
        success_metrics: The metrics, primary first.
        duration_days: Planned duration.
        status: ``"running"``, ``"concluded"`` or ``"stopped"``.
        salt: Key of the assignment hash.
        created_at: When the test started (UTC).
        ends_at: ``created_at + duration_days``.
        concluded_at: When it was concluded or stopped.
        winner: The winning arm of a concluded test, if any.
        promoted_at: When the winner was handed to the deployment path.
    """

    name: str
    arms: tuple[ModelArm, ...]
    success_metrics: tuple[SuccessMetric, ...]
    duration_days: int
    status: Status
    salt: str
    created_at: datetime
    ends_at: datetime
    concluded_at: datetime | None = None
    winner: str | None = None
    promoted_at: datetime | None = None

    @property
    def control(self) -> ModelArm:
        """The first arm."""
        return self.arms[0]

    @property
    def primary_metric(self) -> SuccessMetric:
        """The first success metric."""
        return self.success_metrics[0]

    @property
    def arm_names(self) -> tuple[str, ...]:
        """Arm names in definition order."""
        return tuple(a.arm for a in self.arms)

    def arm(self, name: str) -> ModelArm:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.arm == name:
                return arm
        raise NotFoundError(
            problem(
                f"one of the arms {list(self.arm_names)!r}",
                repr(name),
                "use an arm name from the test definition",
                subject=f"A/B test {self.name!r}",
            )
        )

    def assign(self, entity_key: object) -> str:
        """The arm of ``entity_key`` (see the module docstring)."""
        bucket = assign_bucket(self.salt, entity_key)
        bound = 0
        for arm in self.arms:
            bound += round(arm.traffic_percentage * BUCKETS / 100)
            if bucket < bound:
                return arm.arm
        return self.arms[-1].arm  # unreachable: the bounds end at BUCKETS

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        data = dataclasses.asdict(self)
        for key in ("created_at", "ends_at", "concluded_at", "promoted_at"):
            data[key] = _iso(data[key])
        return data


@dataclass(frozen=True)
class ABTestResults:
    """The statistics of a test at one moment.

    Attributes:
        test_name: The test.
        confidence: Confidence level of intervals (significance at ``1 - confidence``).
        control: The control arm.
        primary_metric: The metric the winner is decided on.
        arms: ``arms[arm][metric]`` -> :class:`ArmMetricStats`.
        comparisons: Every challenger against the control on every metric.
        winner: The winning arm, or None when nothing is significant.
        winner_model: The winner's model name and version.
        reason: Why there is (or is not) a winner.
        complete: The planned duration has passed.
        computed_at: When these results were computed.
    """

    test_name: str
    confidence: float
    control: str
    primary_metric: str
    arms: dict[str, dict[str, ArmMetricStats]]
    comparisons: tuple[MetricComparison, ...]
    winner: str | None
    winner_model: ModelArm | None
    reason: str
    complete: bool
    computed_at: datetime

    @property
    def significant(self) -> bool:
        """A winner was found."""
        return self.winner is not None

    def comparison(self, metric: str, arm: str | None = None) -> MetricComparison:
        """The comparison of ``arm`` (default: the only challenger) with the control."""
        matches = [c for c in self.comparisons if c.metric == metric and arm in (None, c.arm)]
        if len(matches) != 1:
            raise NotFoundError(
                problem(
                    "one comparison for the metric and arm",
                    f"{len(matches)} for metric={metric!r}, arm={arm!r}",
                    "pass a success metric of the test and, with several challengers, an arm",
                    subject=f"A/B test {self.test_name!r}",
                )
            )
        return matches[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what a concluded test stores)."""
        data = dataclasses.asdict(self)
        data["computed_at"] = _iso(self.computed_at)
        data["comparisons"] = [dataclasses.asdict(c) for c in self.comparisons]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ABTestResults:
        """Rebuild from :meth:`to_dict`."""
        winner_model = data["winner_model"]
        return cls(
            test_name=data["test_name"],
            confidence=data["confidence"],
            control=data["control"],
            primary_metric=data["primary_metric"],
            arms={
                arm: {m: ArmMetricStats(**s) for m, s in metrics.items()}
                for arm, metrics in data["arms"].items()
            },
            comparisons=tuple(MetricComparison(**c) for c in data["comparisons"]),
            winner=data["winner"],
            winner_model=ModelArm(**winner_model) if winner_model else None,
            reason=data["reason"],
            complete=data["complete"],
            computed_at=_parse_iso(data["computed_at"]),
        )


@dataclass(frozen=True)
class ABTestConclusion:
    """What :meth:`ABTestManager.conclude` decided.

    Attributes:
        test_name: The test.
        winner: The winning arm, or None.
        model_name: The winner's model, or None.
        model_version: The winner's model version, or None.
        concluded_at: When the test was concluded.
        promoted: The winner has been handed to the deployment path.
        results: The results the decision was made on.
    """

    test_name: str
    winner: str | None
    model_name: str | None
    model_version: str | None
    concluded_at: datetime
    promoted: bool
    results: ABTestResults


def assign_bucket(salt: str, entity_key: object) -> int:
    """The bucket in ``[0, BUCKETS)`` of an entity key under a test's salt."""
    digest = hashlib.sha256(f"{salt}\x1f{entity_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def _key_hash(entity_key: object) -> str:
    return hashlib.sha256(str(entity_key).encode()).hexdigest()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _config_error(expected: str, got: str, fix: str, subject: str) -> ConfigError:
    return ConfigError(problem(expected, got, fix, subject=subject))


def _parse_arms(test_name: str, models: object) -> list[ModelArm]:
    subject = f"A/B test {test_name!r} models"
    entries: list[tuple[str | None, object]]
    if isinstance(models, Mapping):
        entries = [(arm, spec) for arm, spec in models.items()]
    elif isinstance(models, Sequence) and not isinstance(models, str | bytes):
        entries = [(None, spec) for spec in models]
    else:
        raise _config_error(
            "a mapping of arm name to {'name', 'version', 'traffic_percentage'} "
            "(or a list of such mappings)",
            repr(models),
            "pass models={'control': {...}, 'treatment': {...}} as in the guide",
            subject,
        )
    if len(entries) < 2:
        raise _config_error(
            "at least 2 arms (a control and a challenger)",
            f"{len(entries)} arm(s)",
            "add the model to compare with",
            subject,
        )
    arms: list[ModelArm] = []
    for position, (key, spec) in enumerate(entries):
        where = f"arm {key!r}" if key is not None else f"models[{position}]"
        if not isinstance(spec, Mapping):
            raise _config_error(
                "a mapping with 'name', 'version' and 'traffic_percentage'",
                f"{spec!r} for {where}",
                "describe each arm as {'name': ..., 'version': ..., 'traffic_percentage': ...}",
                subject,
            )
        allowed = _ARM_KEYS if key is not None else ("arm", *_ARM_KEYS)
        unknown = sorted(str(k) for k in spec if k not in allowed)
        missing = [k for k in _ARM_KEYS if k not in spec]
        if unknown or missing:
            raise _config_error(
                f"exactly the keys {list(allowed)!r}",
                f"unknown {unknown!r} and missing {missing!r} for {where}",
                "rename or add the keys",
                subject,
            )
        arm = key if key is not None else spec.get("arm", spec["name"])
        if not isinstance(arm, str) or not _ARM_NAME.match(arm):
            raise _config_error(
                "an arm name of letters, digits and _ . : @ - (at most 64 characters)",
                repr(arm),
                "rename the arm",
                subject,
            )
        name, version, percentage = spec["name"], spec["version"], spec["traffic_percentage"]
        if not isinstance(name, str) or not name.strip():
            raise _config_error("a model name", f"{name!r} for {where}", "name the model", subject)
        if isinstance(version, bool) or not isinstance(version, str | int) or not str(version):
            raise _config_error(
                "a model version (a string such as '1.2.0')",
                f"{version!r} for {where}",
                "give the registered version",
                subject,
            )
        if (
            not _is_number(percentage)
            or not math.isfinite(float(percentage))
            or not 0 < float(percentage) <= 100
            or abs(float(percentage) * 100 - round(float(percentage) * 100)) > 1e-6
        ):
            raise _config_error(
                "a traffic_percentage in (0, 100] with at most 2 decimals",
                f"{percentage!r} for {where}",
                "give each arm a positive share; the shares sum to 100",
                subject,
            )
        arms.append(ModelArm(arm, name, str(version), float(percentage)))
    names = [a.arm for a in arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _config_error(
            "distinct arm names",
            f"{duplicates!r} more than once",
            "give each arm its own 'arm' key, or pass models as a mapping keyed by arm name",
            subject,
        )
    total = sum(a.traffic_percentage for a in arms)
    if abs(total - 100) > 1e-6:
        shares = ", ".join(f"{a.arm}={a.traffic_percentage:g}" for a in arms)
        raise _config_error(
            "traffic percentages summing to 100",
            f"{shares} (sum {total:g})",
            "adjust the traffic_percentage values so they add up to 100",
            subject,
        )
    return arms


def _parse_metrics(test_name: str, success_metrics: object) -> list[SuccessMetric]:
    subject = f"A/B test {test_name!r} success_metrics"
    if isinstance(success_metrics, str | bytes) or not isinstance(success_metrics, Sequence):
        raise _config_error(
            "a list of metric names (primary first)",
            repr(success_metrics),
            "pass e.g. success_metrics=['mape', 'mae', 'latency']",
            subject,
        )
    metrics: list[SuccessMetric] = []
    for item in success_metrics:
        direction: object = None
        name: object = item
        if isinstance(item, Mapping):
            extra = sorted(str(k) for k in item if k not in ("name", "direction"))
            if extra or "name" not in item:
                raise _config_error(
                    "a metric name or {'name': ..., 'direction': 'lower' | 'higher'}",
                    repr(item),
                    "use only the keys 'name' and 'direction'",
                    subject,
                )
            name, direction = item["name"], item.get("direction")
        if not isinstance(name, str) or not _METRIC_NAME.match(name):
            raise _config_error(
                "a metric name of letters, digits and _ . - starting with a letter",
                repr(name),
                "rename the metric",
                subject,
            )
        if direction is None:
            direction = default_direction(name)
        if direction not in ("lower", "higher"):
            raise _config_error(
                "direction 'lower' or 'higher'",
                f"{direction!r} for {name!r}",
                "say which way is better",
                subject,
            )
        metrics.append(SuccessMetric(name, direction))
    if not metrics:
        raise _config_error(
            "at least one success metric",
            "none",
            "pass e.g. success_metrics=['mape']",
            subject,
        )
    names = [m.name for m in metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _config_error(
            "distinct success metrics", f"{duplicates!r} more than once", "list each once", subject
        )
    return metrics


class ABTestManager:
    """Create, assign, observe, analyse and conclude A/B tests.

    State lives in the platform database of ``settings`` (SQLite in the
    workspace, or PostgreSQL), opened and migrated on first use; call
    :meth:`close` (or use the manager as a context manager) to release it.

    Args:
        settings: Settings naming the platform database; default :func:`get_settings`.
        db: An open database to use instead (it is not closed by :meth:`close`).
    """

    def __init__(self, settings: Settings | None = None, *, db: PlatformDB | None = None) -> None:
        self.settings = settings
        self._db = db
        self._owns_db = db is None
        self._lock = threading.Lock()
        self._definitions: dict[str, ABTest] = {}

    # -- lifecycle -----------------------------------------------------------------

    @property
    def db(self) -> PlatformDB:
        """The platform database, opened (and migrated) on first use."""
        with self._lock:
            if self._db is None:
                self._db = PlatformDB.from_settings(self.settings or get_settings())
            return self._db

    def close(self) -> None:
        """Release the database connections the manager opened."""
        with self._lock:
            if self._db is not None and self._owns_db:
                self._db.dispose()
                self._db = None

    def __enter__(self) -> ABTestManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- definition ----------------------------------------------------------------

    async def create_test(
        self,
        test_name: str,
        models: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
        success_metrics: Sequence[str | Mapping[str, str]],
        test_duration_days: int = 14,
        *,
        salt: str | None = None,
    ) -> ABTest:
        """Start an A/B test (see the module docstring for the definition rules).

        Args:
            test_name: Unique name (letters, digits, ``_ . : -``).
            models: Arm name -> ``{"name", "version", "traffic_percentage"}``, control first.
            success_metrics: Metric names (or ``{"name", "direction"}``), primary first.
            test_duration_days: Planned duration; :meth:`conclude` waits for it.
            salt: Key of the assignment hash; default random. Give two tests
                one salt (and the same arms and shares) to assign every entity
                alike in both, e.g. in staging and production.

        Returns:
            The stored test (the existing one when an identical test exists).

        Raises:
            ConfigError: The definition is invalid.
            StateError: A different test of that name exists.
        """
        return await asyncio.to_thread(
            self._create_test, test_name, models, success_metrics, test_duration_days, salt
        )

    def _create_test(
        self,
        test_name: str,
        models: object,
        success_metrics: object,
        duration: object,
        salt: str | None,
    ) -> ABTest:
        if not isinstance(test_name, str) or not _TEST_NAME.match(test_name):
            raise _config_error(
                "a test name of letters, digits and _ . : - (at most 255 characters)",
                repr(test_name),
                "rename the test",
                "A/B test",
            )
        arms = _parse_arms(test_name, models)
        metrics = _parse_metrics(test_name, success_metrics)
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
            raise _config_error(
                "a whole number of days >= 1",
                repr(duration),
                "pass e.g. test_duration_days=14",
                f"A/B test {test_name!r} test_duration_days",
            )
        if salt is not None and (not isinstance(salt, str) or not 0 < len(salt) <= 64):
            raise _config_error(
                "a salt of 1 to 64 characters",
                repr(salt),
                "pass a short string or leave salt unset",
                f"A/B test {test_name!r} salt",
            )
        created = utcnow()
        record = ABTestRecord(
            id=new_id(),
            name=test_name,
            arms=[dataclasses.asdict(a) for a in arms],
            success_metrics=[dataclasses.asdict(m) for m in metrics],
            duration_days=duration,
            status="running",
            salt=salt if salt is not None else new_id(),
            created_at=created,
            ends_at=created + timedelta(days=duration),
        )
        wanted = (tuple(arms), tuple(metrics), duration)
        existing = self._find(test_name)
        if existing is None:
            self._require_production_approval(arms)
            try:
                with self.db.session() as session:
                    session.add(record)
            except IntegrityError:  # created concurrently: compare with the winner of the race
                existing = self._find(test_name)
        if existing is None:
            return self._remember(self._to_test(record))
        if (existing.arms, existing.success_metrics, existing.duration_days) != wanted or (
            salt is not None and existing.salt != salt
        ):
            raise StateError(
                problem(
                    "a new test name, or the definition the test was created with",
                    f"{test_name!r} already exists with arms "
                    f"{[dataclasses.asdict(a) for a in existing.arms]!r}, metrics "
                    f"{[m.name for m in existing.success_metrics]!r} and "
                    f"{existing.duration_days} days",
                    "choose another test name",
                    subject="A/B test",
                )
            )
        return existing

    def _require_production_approval(self, arms: Sequence[ModelArm]) -> None:
        """A running test splits production traffic: each arm's version needs an approved
        governance request for production, unless it is production's active deployment."""
        from retailml.core.db_deploy import is_active_deployment
        from retailml.governance.model_governance import ModelGovernance

        governance = ModelGovernance(self.settings or get_settings(), db=self.db)
        for arm in arms:
            with self.db.session() as session:
                serving = is_active_deployment(session, arm.model_name, arm.model_version)
            if not serving:
                governance.require_approval(arm.model_name, arm.model_version, "production")

    # -- reading -------------------------------------------------------------------

    def list_tests(self, status: Status | None = None) -> list[ABTest]:
        """Every test (optionally of one status), oldest first."""
        query = select(ABTestRecord).order_by(ABTestRecord.created_at, ABTestRecord.name)
        if status is not None:
            query = query.where(ABTestRecord.status == status)
        with self.db.session() as session:
            return [self._to_test(r) for r in session.scalars(query)]

    def get_test(self, test_name: str) -> ABTest:
        """The test called ``test_name``.

        Raises:
            NotFoundError: No such test (the message lists the existing ones).
        """
        test = self._find(test_name)
        if test is None:
            with self.db.session() as session:
                names = list(
                    session.scalars(
                        select(ABTestRecord.name).order_by(ABTestRecord.created_at).limit(50)
                    )
                )
            raise NotFoundError(
                problem(
                    f"an existing A/B test (existing: {names!r})",
                    repr(test_name),
                    "create it with ABTestManager().create_test(...) or use an existing name",
                    subject="A/B test",
                )
            )
        return test

    def _find(self, test_name: str) -> ABTest | None:
        with self.db.session() as session:
            record = session.scalars(
                select(ABTestRecord).where(ABTestRecord.name == test_name)
            ).first()
            return None if record is None else self._remember(self._to_test(record))

    def _definition(self, test_name: str) -> ABTest:
        """The test's arms and salt, which never change, cached per manager."""
        test = self._definitions.get(test_name)
        return test if test is not None else self.get_test(test_name)

    def _remember(self, test: ABTest) -> ABTest:
        self._definitions[test.name] = test
        return test

    @staticmethod
    def _to_test(record: ABTestRecord) -> ABTest:
        created_at = _aware(record.created_at)
        ends_at = _aware(record.ends_at)
        assert created_at is not None and ends_at is not None
        return ABTest(
            name=record.name,
            arms=tuple(ModelArm(**a) for a in record.arms),
            success_metrics=tuple(SuccessMetric(**m) for m in record.success_metrics),
            duration_days=record.duration_days,
            status=cast(Status, record.status),
            salt=record.salt,
            created_at=created_at,
            ends_at=ends_at,
            concluded_at=_aware(record.concluded_at),
            winner=record.winner,
            promoted_at=_aware(record.promoted_at),
        )

    # -- assignment and observations -----------------------------------------------

    def assign(self, test_name: str, entity_key: object) -> str:
        """The arm serving ``entity_key``: deterministic and sticky, no write.

        Raises:
            NotFoundError: No such test.
        """
        return self._definition(test_name).assign(entity_key)

    def record(
        self,
        test_name: str,
        metric: str,
        value: float,
        *,
        arm: str | None = None,
        entity_key: object = None,
    ) -> str:
        """Store one observation of a success metric; returns the arm it counted for.

        Args:
            test_name: The test.
            metric: One of its success metrics.
            value: A finite number (``True``/``False`` count as 1/0).
            arm: The arm observed; or
            entity_key: The entity observed (the arm is its assignment).

        Raises:
            DataValidationError: Unknown metric or arm, a non-finite value,
                neither arm nor entity key, or an arm the key is not assigned to.
            StateError: The test is concluded or stopped.
        """
        return self.record_many(
            test_name, [{"metric": metric, "value": value, "arm": arm, "entity_key": entity_key}]
        )[0]

    def record_many(self, test_name: str, observations: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store many observations in batched inserts (all or none).

        Args:
            test_name: The test.
            observations: Mappings with ``metric``, ``value`` and ``arm`` or
                ``entity_key`` (a pandas DataFrame with those columns works too).

        Returns:
            The arm of each observation, in order.
        """
        if hasattr(observations, "to_dict") and hasattr(observations, "columns"):
            observations = cast(Any, observations).to_dict("records")
        definition = self._definition(test_name)
        metrics = {m.name for m in definition.success_metrics}
        arms = set(definition.arm_names)
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for position, item in enumerate(observations):
            rows.append(self._observation_row(definition, metrics, arms, position, item, now))
        test = self.get_test(test_name)
        if test.status != "running":
            raise StateError(
                problem(
                    "a running test",
                    f"{test_name!r} is {test.status}",
                    "record observations only while the test runs; create a new test",
                    subject="A/B test",
                )
            )
        if rows:
            with self.db.session() as session:
                for start in range(0, len(rows), _INSERT_CHUNK):
                    session.execute(insert(ABObservation), rows[start : start + _INSERT_CHUNK])
        return [r["arm"] for r in rows]

    @staticmethod
    def _observation_row(
        definition: ABTest,
        metrics: set[str],
        arms: set[str],
        position: int,
        item: Mapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        subject = f"A/B test {definition.name!r} observation #{position}"
        if not isinstance(item, Mapping):
            raise DataValidationError(
                problem(
                    "a mapping with 'metric', 'value' and 'arm' or 'entity_key'",
                    repr(item),
                    "pass dicts",
                    subject=subject,
                )
            )
        metric, value = item.get("metric"), item.get("value")
        arm, key = item.get("arm"), item.get("entity_key")
        if _is_missing(key):
            key = None
        if _is_missing(arm):
            arm = None
        if metric not in metrics:
            raise DataValidationError(
                problem(
                    f"a success metric of the test ({sorted(metrics)!r})",
                    repr(metric),
                    "record only the test's success metrics",
                    subject=subject,
                )
            )
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise DataValidationError(
                problem("a finite number", repr(value), "drop or fix the value", subject=subject)
            )
        number = float(value)
        if arm is None and key is None:
            raise DataValidationError(
                problem(
                    "an 'arm' or an 'entity_key'",
                    "neither",
                    "say which arm or entity was observed",
                    subject=subject,
                )
            )
        if arm is not None and arm not in arms:
            raise DataValidationError(
                problem(
                    f"one of the arms {list(definition.arm_names)!r}",
                    repr(arm),
                    "use an arm of the test",
                    subject=subject,
                )
            )
        if key is not None:
            assigned = definition.assign(key)
            if arm is not None and arm != assigned:
                raise DataValidationError(
                    problem(
                        f"the arm entity {key!r} is assigned to ({assigned!r})",
                        repr(arm),
                        "pass only the entity key, or only the arm that actually served it",
                        subject=subject,
                    )
                )
            arm = assigned
        return {
            "test_name": definition.name,
            "arm": arm,
            "entity_key_hash": None if key is None else _key_hash(key),
            "metric": metric,
            "value": number,
            "observed_at": now,
        }

    # -- statistics ----------------------------------------------------------------

    def summaries(self, test_name: str) -> dict[str, dict[str, Summary]]:
        """``n``, mean, variance and 0/1-ness of every arm and metric, computed in SQL."""
        obs = ABObservation
        means = (
            select(
                obs.arm.label("arm"),
                obs.metric.label("metric"),
                func.count().label("n"),
                func.avg(obs.value).label("mean"),
                func.sum(case((obs.value.in_([0.0, 1.0]), 1), else_=0)).label("binary"),
            )
            .where(obs.test_name == test_name)
            .group_by(obs.arm, obs.metric)
            .subquery()
        )
        deviation = obs.value - means.c.mean
        query = (
            select(
                means.c.arm,
                means.c.metric,
                means.c.n,
                means.c.mean,
                means.c.binary,
                func.sum(deviation * deviation),
            )
            .join(means, and_(obs.arm == means.c.arm, obs.metric == means.c.metric))
            .where(obs.test_name == test_name)
            .group_by(means.c.arm, means.c.metric, means.c.n, means.c.mean, means.c.binary)
        )
        result: dict[str, dict[str, Summary]] = {}
        with self.db.session() as session:
            for arm, metric, n, mean, binary, squares in session.execute(query):
                n = int(n)
                variance = float(squares) / (n - 1) if n > 1 else 0.0
                result.setdefault(arm, {})[metric] = Summary(
                    n, float(mean), variance, int(binary) == n
                )
        return result

    def get_results(self, test_name: str, confidence: float = 0.95) -> ABTestResults:
        """Per-arm statistics, challenger-vs-control tests and the winner.

        Args:
            test_name: The test.
            confidence: Level of the intervals; significance is at ``1 - confidence``
                after Holm's correction.

        Raises:
            NotFoundError: No such test.
            ConfigError: ``confidence`` outside (0, 1).
        """
        if not _is_number(confidence) or not 0 < float(confidence) < 1:
            raise _config_error(
                "a confidence level in (0, 1)",
                repr(confidence),
                "pass e.g. confidence=0.95",
                "A/B test results",
            )
        test = self.get_test(test_name)
        analysis = analyze(
            self.summaries(test_name),
            test.arm_names,
            [(m.name, m.direction) for m in test.success_metrics],
            float(confidence),
        )
        now = utcnow()
        return ABTestResults(
            test_name=test.name,
            confidence=float(confidence),
            control=test.control.arm,
            primary_metric=test.primary_metric.name,
            arms=analysis.arms,
            comparisons=analysis.comparisons,
            winner=analysis.winner,
            winner_model=test.arm(analysis.winner) if analysis.winner else None,
            reason=analysis.reason,
            complete=now >= test.ends_at,
            computed_at=now,
        )

    # -- ending --------------------------------------------------------------------

    async def conclude(
        self,
        test_name: str,
        promote: Promote | None = None,
        *,
        confidence: float = 0.95,
        force: bool = False,
    ) -> ABTestConclusion:
        """Conclude the test with its winner and hand the winner to ``promote``.

        Args:
            test_name: The test.
            promote: The deployment path: ``promote(model_name, model_version)``,
                sync or async; called once per test, for the winner only.
            confidence: As in :meth:`get_results`.
            force: Conclude before ``test_duration_days`` have passed.

        Returns:
            The decision; the same one on every later call.

        Raises:
            StateError: The test was stopped, or its duration has not passed
                and ``force`` is False.
        """
        test = await asyncio.to_thread(self._conclude, test_name, confidence, force)
        if promote is not None and test.winner is not None and test.promoted_at is None:
            claimed = await asyncio.to_thread(self._claim_promotion, test_name, True)
            if claimed:
                arm = test.arm(test.winner)
                try:
                    outcome = promote(arm.model_name, arm.model_version)
                    if inspect.isawaitable(outcome):
                        await outcome
                except BaseException:
                    await asyncio.to_thread(self._claim_promotion, test_name, False)
                    raise
        return await asyncio.to_thread(self._conclusion, test_name)

    def _conclude(self, test_name: str, confidence: float, force: bool) -> ABTest:
        test = self.get_test(test_name)
        if test.status == "running":
            now = utcnow()
            if now < test.ends_at and not force:
                raise StateError(
                    problem(
                        f"a test past its planned end ({_iso(test.ends_at)})",
                        f"{test_name!r} concluded on {_iso(now)}",
                        "wait for test_duration_days to pass (stopping early on a significant "
                        "result inflates false positives) or pass force=True",
                        subject="A/B test",
                    )
                )
            results = self.get_results(test_name, confidence)
            with self.db.session() as session:
                session.execute(
                    update(ABTestRecord)
                    .where(ABTestRecord.name == test_name, ABTestRecord.status == "running")
                    .values(
                        status="concluded",
                        winner=results.winner,
                        concluded_at=now,
                        conclusion=results.to_dict(),
                    )
                )
            test = self.get_test(test_name)
        if test.status == "stopped":
            raise StateError(
                problem(
                    "a running or concluded test",
                    f"{test_name!r} was stopped",
                    "a stopped test has no winner; create a new test",
                    subject="A/B test",
                )
            )
        return test

    def _claim_promotion(self, test_name: str, claim: bool) -> bool:
        """Set (or, after a failed promotion, clear) ``promoted_at``; True if this call did."""
        column = ABTestRecord.promoted_at
        with self.db.session() as session:
            result = session.execute(
                update(ABTestRecord)
                .where(ABTestRecord.name == test_name)
                .where(column.is_(None) if claim else column.isnot(None))
                .values(promoted_at=utcnow() if claim else None)
            )
            return bool(cast(Any, result).rowcount == 1)

    def _conclusion(self, test_name: str) -> ABTestConclusion:
        with self.db.session() as session:
            record = session.scalars(
                select(ABTestRecord).where(ABTestRecord.name == test_name)
            ).one()
            test = self._to_test(record)
            stored = record.conclusion
        assert stored is not None and test.concluded_at is not None
        winner = test.arm(test.winner) if test.winner else None
        return ABTestConclusion(
            test_name=test.name,
            winner=test.winner,
            model_name=winner.model_name if winner else None,
            model_version=winner.model_version if winner else None,
            concluded_at=test.concluded_at,
            promoted=test.promoted_at is not None,
            results=ABTestResults.from_dict(stored),
        )

    def stop(self, test_name: str) -> ABTest:
        """End a running test without a winner (idempotent for a stopped test).

        Raises:
            StateError: The test is already concluded.
        """
        test = self.get_test(test_name)
        if test.status == "running":
            with self.db.session() as session:
                session.execute(
                    update(ABTestRecord)
                    .where(ABTestRecord.name == test_name, ABTestRecord.status == "running")
                    .values(status="stopped", concluded_at=utcnow())
                )
            test = self.get_test(test_name)
        if test.status == "concluded":
            raise StateError(
                problem(
                    "a running test",
                    f"{test_name!r} is concluded",
                    "a concluded test cannot be stopped",
                    subject="A/B test",
                )
            )
        return test


def _is_missing(value: object) -> bool:
    """None or a float NaN (a DataFrame's empty cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))
