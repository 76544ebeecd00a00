"""Recovery of failed training jobs: the guide's ``src.ml.training.recovery``.

::

    from retailml.training.recovery import TrainingRecovery

    recovery = TrainingRecovery(job_id)
    analysis = recovery.analyze_failure()        # failure_type, evidence, last_known_good
    if analysis.failure_type == "data_corruption":
        recovery.restore_training_data(backup_date=analysis.last_known_good)
    elif analysis.failure_type == "resource_exhaustion":
        recovery.adjust_training_resources(memory_multiplier=1.5, cpu_multiplier=1.2)
    elif analysis.failure_type == "hyperparameter_error":
        recovery.rollback_hyperparameters()
    new_job = recovery.restart_training()       # a "restart" job with the fix, run now

Jobs are the records of :mod:`retailml.core.jobs` (``retailml train`` writes
one per run; retraining and restarts write theirs). The failure is classified
from the job's recorded exception type, message and traceback (and, for a
memory-limited job whose process died, the end of its log):

=======================  =================================================================
``data_corruption``      Parquet/Arrow read errors (bad magic bytes, thrift, truncated
                         files), :class:`~retailml.core.errors.DataValidationError`, NaN or
                         infinite values in the inputs
``resource_exhaustion``  ``MemoryError``, failed allocations or mappings, no space left on
                         device, a training process killed by a signal
``hyperparameter_error`` a ``ConfigError`` or estimator ``ValueError``/``TypeError`` about a
                         (hyper)parameter
``unknown``              anything else (restarting re-runs the same inputs)
=======================  =================================================================

Each fix changes the inputs of the next job, never the failed one's record:
:meth:`~TrainingRecovery.restore_training_data` pins silver transactions to the
newest recorded data version at or before a date whose part files all read
back whole; :meth:`~TrainingRecovery.adjust_training_resources` raises the
memory limit and CPUs; :meth:`~TrainingRecovery.rollback_hyperparameters` takes
the hyperparameters (and algorithm) of the model's last successful job, else
of its last finished MLflow run. :meth:`~TrainingRecovery.restart_training`
records a ``restart`` job (``parent_job_id`` = the failed one) whose inputs say
what was changed (``inputs["recovery"]``), runs it and returns its record.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from retailml.core.db import PlatformDB, UsesPlatformDB, as_utc
from retailml.core.errors import NotFoundError, StateError, problem
from retailml.core.jobs import JobRecord, create_job, get_job, list_jobs
from retailml.core.settings import Settings, get_settings
from retailml.training._jobs import (
    config_from_inputs,
    damaged_parts,
    job_log,
    run_training_job,
    silver_versions,
)

__all__ = [
    "FAILURE_TYPES",
    "FailureAnalysis",
    "ResourceAdjustment",
    "RestoredData",
    "TrainingRecovery",
]

FailureType = Literal["data_corruption", "resource_exhaustion", "hyperparameter_error", "unknown"]
#: The failure classes :meth:`TrainingRecovery.analyze_failure` tells apart.
FAILURE_TYPES: Final = ("data_corruption", "resource_exhaustion", "hyperparameter_error", "unknown")
#: A retry's memory limit is at least this much above the last successful job's peak.
PEAK_HEADROOM: Final = 1.3

_RESOURCE = re.compile(
    r"MemoryError|cannot allocate memory|unable to allocate|failed to map segment|"
    r"std::bad_alloc|out of memory|no space left on device|ENOSPC|\[Errno 28\]|\[Errno 12\]|"
    r"killed by SIG|can't start new thread|resource temporarily unavailable",
    re.IGNORECASE,
)
_CORRUPTION = re.compile(
    r"parquet magic bytes|couldn't deserialize thrift|corrupt|truncated|invalid parquet|"
    r"unexpected end of (stream|file)|Input (X )?contains (NaN|infinity)|"
    r"contains NaN|value too large for dtype|not a parquet file|checksum",
    re.IGNORECASE,
)
_PARAMETER = re.compile(
    r"hyper ?parameters?|'\w+' parameter of|parameter '\w+'|unexpected keyword argument|"
    r"invalid parameter|must be (an?|in|one of|>=|<=|>|<)",
    re.IGNORECASE,
)
_DATA_ERRORS: Final = ("DataValidationError", "InputFileError", "ArrowInvalid", "ArrowIOError")
_PARAMETER_ERRORS: Final = ("ConfigError", "InvalidParameterError", "ValueError", "TypeError")

_ACTIONS: Final[dict[str, str]] = {
    "data_corruption": "restore_training_data(backup_date=last_known_good): pin the job to the "
    "newest intact data version, then restart_training()",
    "resource_exhaustion": "adjust_training_resources(memory_multiplier=1.5, cpu_multiplier=1.2) "
    "(or train on a shorter data window), then restart_training()",
    "hyperparameter_error": "rollback_hyperparameters() to the last successful run's, "
    "then restart_training()",
    "unknown": "read the recorded traceback; restart_training() re-runs the same inputs",
}


@dataclass(frozen=True)
class FailureAnalysis:
    """Why a training job failed and what to do about it.

    Attributes:
        job_id: The failed job.
        failure_type: One of :data:`FAILURE_TYPES`.
        error_type: The recorded exception type (``module.QualifiedName``).
        error_message: The recorded message (first 2,000 characters).
        evidence: The facts the classification rests on, one per line.
        last_known_good: When the model last trained successfully (the
            finish time of its newest succeeded job before this one), or None.
        last_known_good_data_version: The silver data version that job read.
        last_good_job_id: That job.
        recommended_action: The next step.
    """

    job_id: str
    failure_type: FailureType
    error_type: str | None
    error_message: str | None
    evidence: list[str]
    last_known_good: datetime | None
    last_known_good_data_version: str | None
    last_good_job_id: str | None
    recommended_action: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out = asdict(self)
        out["last_known_good"] = self.last_known_good.isoformat() if self.last_known_good else None
        return out


@dataclass(frozen=True)
class RestoredData:
    """The data version a restarted job will train on.

    Attributes:
        table: The workspace table (``silver.transactions``).
        data_version: The chosen version.
        created_at: When it was recorded.
        row_count: Rows it holds.
        parts: Its part files (every one read back whole).
        skipped: Newer versions passed over, ``version -> why``.
    """

    table: str
    data_version: str
    created_at: datetime
    row_count: int
    parts: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(frozen=True)
class ResourceAdjustment:
    """Resources of the restarted job, before and after, and why."""

    memory_mb: int | None
    cpus: int | None
    previous_memory_mb: int | None
    previous_cpus: int | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


class TrainingRecovery(UsesPlatformDB):
    """Analyse a failed training job and restart it with a fix (see the module docstring).

    Args:
        job_id: The failed job.
        settings: retailml settings (default: the process settings).
        db: The platform database (default: the one the settings name).

    Raises:
        NotFoundError: for an unknown job id.
    """

    def __init__(
        self, job_id: str, *, settings: Settings | None = None, db: PlatformDB | None = None
    ) -> None:
        self._use_db(settings or get_settings(), db)
        self.job: JobRecord = get_job(self.db, str(job_id))
        #: The inputs the restarted job will get (the failed job's, plus the fixes).
        self.inputs: dict[str, Any] = copy.deepcopy(self.job.inputs)
        #: What was changed, one line per fix.
        self.changes: list[str] = []
        self._analysis: FailureAnalysis | None = None

    def __repr__(self) -> str:
        return f"TrainingRecovery({self.job.id!r}, model={self.job.model_name!r})"

    # --- analysis -----------------------------------------------------------------------------

    def _last_good(self) -> JobRecord | None:
        created = as_utc(self.job.created_at)
        for job in list_jobs(self.db, model_name=self.job.model_name, status="succeeded"):
            finished = as_utc(job.finished_at)
            if (
                job.id != self.job.id
                and finished is not None
                and created is not None
                and finished <= created
            ):
                return job
        return None

    def analyze_failure(self) -> FailureAnalysis:
        """Classify the job's recorded failure (module docstring) and name the next step.

        Raises:
            StateError: when the job has not failed (queued, running or succeeded).
        """
        job = self.job
        if job.status not in ("failed", "abandoned"):
            raise StateError(
                problem(
                    "a failed (or abandoned) training job",
                    f"job {job.id} with status {job.status!r}",
                    "analyse a job whose status is 'failed'",
                    subject="TrainingRecovery",
                )
            )
        failure, evidence = _classify(job, self.settings)
        good = self._last_good()
        if good is not None:
            version = (good.outcome or {}).get("data_version")
            evidence.append(
                f"last successful job of {job.model_name}: {good.id} finished "
                f"{as_utc(good.finished_at):%Y-%m-%d %H:%M:%S} UTC"
                + (f" on data version {str(version)[:12]}" if version else "")
            )
        analysis = FailureAnalysis(
            job_id=job.id,
            failure_type=failure,
            error_type=job.error_type,
            error_message=(job.error_message or "")[:2000] or None,
            evidence=evidence,
            last_known_good=as_utc(good.finished_at) if good is not None else None,
            last_known_good_data_version=(good.outcome or {}).get("data_version") if good else None,
            last_good_job_id=good.id if good is not None else None,
            recommended_action=_ACTIONS[failure],
        )
        self._analysis = analysis
        return analysis

    # --- fixes --------------------------------------------------------------------------------

    def restore_training_data(self, backup_date: datetime | str | None = None) -> RestoredData:
        """Pin the restarted job to the newest intact silver version at or before ``backup_date``.

        Args:
            backup_date: A datetime or ISO date; None means the newest intact version.

        Returns:
            The chosen version, its parts, and the newer versions skipped with why.

        Raises:
            StateError: when the job does not train on silver transactions.
            NotFoundError: when no recorded version qualifies.
        """
        data = dict(self.inputs.get("data") or {})
        source = str(config_from_inputs(self.inputs)["data"].get("source", "feature_set"))
        if source != "silver":
            raise StateError(
                problem(
                    "a job that trains on silver transactions (data.source 'silver'), "
                    "whose versions the platform keeps",
                    f"data.source {source!r}",
                    "repair or replace the file/feature set and restart_training()",
                    subject="restore_training_data",
                )
            )
        cutoff = (
            as_utc(datetime.fromisoformat(backup_date)) if isinstance(backup_date, str) else None
        )
        if isinstance(backup_date, datetime):
            cutoff = as_utc(backup_date)
        skipped: dict[str, str] = {}
        checked: dict[Path, str | None] = {}
        for version in reversed(silver_versions(self.db, self.settings)):
            created = as_utc(version.created_at)
            assert created is not None
            if cutoff is not None and created > cutoff:
                skipped[version.version] = f"recorded {created:%Y-%m-%d %H:%M:%S}, after the date"
                continue
            if not version.consistent:
                skipped[version.version] = "its ingestion runs no longer match the version"
                continue
            unchecked = [p for p in version.parts if p not in checked]
            checked.update(dict.fromkeys(unchecked))
            checked.update(damaged_parts(unchecked))
            bad = [(p, checked[p]) for p in version.parts if checked[p] is not None]
            if bad:
                first, reason = bad[0]
                skipped[version.version] = (
                    f"{len(bad)} damaged part(s), e.g. {first.name}: {reason}"
                )
                continue
            data["data_version"] = version.version
            self.inputs["data"] = data
            self.changes.append(
                f"data: silver transactions pinned to version {version.version[:12]} "
                f"({version.row_count:,} rows, recorded {created:%Y-%m-%d %H:%M:%S} UTC)"
            )
            return RestoredData(
                table="silver.transactions",
                data_version=version.version,
                created_at=created,
                row_count=version.row_count,
                parts=[str(p) for p in version.parts],
                skipped=skipped,
            )
        raise NotFoundError(
            problem(
                "a recorded silver version at or before the date whose parts read back whole",
                f"none ({len(skipped)} versions checked: {skipped})",
                "re-ingest the source files (retailml data ingest) and restart",
                subject="restore_training_data",
            )
        )

    def adjust_training_resources(
        self, memory_multiplier: float = 1.5, cpu_multiplier: float = 1.2
    ) -> ResourceAdjustment:
        """Raise the restarted job's memory limit and CPUs.

        The memory limit becomes ``memory_mb * memory_multiplier``, and at least
        :data:`PEAK_HEADROOM` times the peak address space the model's last
        successful memory-limited job measured. CPUs become ``cpus *
        cpu_multiplier`` rounded up, at most the machine's.

        Raises:
            ConfigError: for multipliers below 1.
        """
        from retailml.core.errors import ConfigError

        for name, value in (
            ("memory_multiplier", memory_multiplier),
            ("cpu_multiplier", cpu_multiplier),
        ):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
                raise ConfigError(
                    problem(f"{name} >= 1", repr(value), f"pass e.g. {name}=1.5", subject=name)
                )
        resources = dict(self.inputs.get("resources") or {})
        old_memory = resources.get("memory_mb")
        old_cpus = resources.get("cpus")
        notes: list[str] = []
        memory = old_memory
        if old_memory:
            memory = math.ceil(int(old_memory) * memory_multiplier)
            peak = self._last_peak()
            if peak is not None and memory < peak * PEAK_HEADROOM:
                memory = math.ceil(peak * PEAK_HEADROOM)
                notes.append(
                    f"memory {old_memory} -> {memory} MiB: {PEAK_HEADROOM}x the {peak:.0f} MiB "
                    f"peak the last successful run needed ({memory_multiplier}x was too little)"
                )
            else:
                notes.append(f"memory {old_memory} -> {memory} MiB ({memory_multiplier}x)")
        else:
            notes.append(
                "memory: the job had no limit (it used the machine's memory); train on a "
                "shorter data window or on a larger machine"
            )
        available = os.cpu_count() or 1
        wanted = math.ceil(int(old_cpus or 1) * cpu_multiplier)
        cpus = min(available, wanted)
        notes.append(
            f"cpus {old_cpus or 1} -> {cpus}"
            + (f" (capped at the machine's {available})" if wanted > available else "")
        )
        resources.update(memory_mb=memory, cpus=cpus)
        self.inputs["resources"] = resources
        self.changes.extend(f"resources: {note}" for note in notes)
        return ResourceAdjustment(memory, cpus, old_memory, old_cpus, notes)

    def _last_peak(self) -> float | None:
        for job in list_jobs(self.db, model_name=self.job.model_name, status="succeeded"):
            peak = (job.outcome or {}).get("peak_address_space_mb")
            if peak:
                return float(peak)
        return None

    def rollback_hyperparameters(self) -> dict[str, Any]:
        """Use the hyperparameters (and algorithm) of the model's last successful run.

        The last succeeded job of the same model, else its newest finished
        MLflow run (``retailml.model_name`` tag, ``hp.*`` parameters).

        Returns:
            The hyperparameters the restarted job gets.

        Raises:
            NotFoundError: when the model never trained successfully.
        """
        good = self._last_good()
        if good is not None:
            params = dict(good.inputs.get("hyperparameters") or {})
            algorithm: str | None = good.inputs.get("algorithm") or good.algorithm
            source = f"job {good.id}"
        else:
            found = _mlflow_params(self.job.model_name, self.settings)
            if found is None:
                raise NotFoundError(
                    problem(
                        f"a successful earlier run of {self.job.model_name!r} (job or MLflow run)",
                        "none",
                        "fix the hyperparameters in the config and train again",
                        subject="rollback_hyperparameters",
                    )
                )
            params, found_algorithm, source = found
            algorithm = found_algorithm
        before = self.inputs.get("hyperparameters")
        self.inputs["hyperparameters"] = params
        change = f"hyperparameters {before!r} -> {params!r} (from {source})"
        if algorithm and algorithm != self.inputs.get("algorithm"):
            change += f"; algorithm {self.inputs.get('algorithm')!r} -> {algorithm!r}"
            self.inputs["algorithm"] = algorithm
        self.changes.append(change)
        return params

    # --- restart ------------------------------------------------------------------------------

    def restart_training(self) -> JobRecord:
        """Record a ``restart`` job with the adjusted inputs, run it now, and return it.

        Returns:
            The new job's record (``status`` ``succeeded`` or ``failed``, its
            ``outcome`` or error, ``parent_job_id`` the failed job).
        """
        inputs = copy.deepcopy(self.inputs)
        inputs["recovery"] = {
            "parent_job_id": self.job.id,
            "failure_type": self._analysis.failure_type if self._analysis else None,
            "changes": list(self.changes) or ["none: the same inputs again"],
        }
        job = create_job(
            self.db,
            kind="restart",
            model_name=self.job.model_name,
            model_type=inputs.get("model_type") or self.job.model_type,
            algorithm=inputs.get("algorithm") or self.job.algorithm,
            trigger="restart",
            parent_job_id=self.job.id,
            inputs=inputs,
        )
        return run_training_job(self.db, job.id, settings=self.settings)


def _classify(job: JobRecord, settings: Settings) -> tuple[FailureType, list[str]]:
    """The failure type and the evidence, from the job's recorded error."""
    error_type = job.error_type or ""
    short = error_type.rsplit(".", 1)[-1]
    message = job.error_message or ""
    trace = job.error_traceback or ""
    evidence = [f"error: {error_type or 'none recorded'}: {message[:300]}"]
    if job.status == "abandoned":
        evidence.append("the worker stopped sending heartbeats before the job finished")
        return "unknown", evidence
    text = f"{error_type}\n{message}"
    log = job_log(settings, job.id)
    if short == "ChildProcessError" and log.is_file():
        evidence.append(f"job log: {log}")
    if short == "MemoryError" or _RESOURCE.search(text):
        match = _RESOURCE.search(text)
        evidence.append(f"resource: {match.group(0) if match else short}")
        limit = (job.inputs.get("resources") or {}).get("memory_mb")
        if limit:
            evidence.append(f"the job ran with a {limit} MiB address-space limit")
        return "resource_exhaustion", evidence
    corrupt = _CORRUPTION.search(text)
    arrow_frame = re.search(r"(pyarrow|parquet)[/\\][\w/\\.]+\.py", trace)
    if short in _DATA_ERRORS or error_type.startswith("pyarrow.") or corrupt:
        if corrupt:
            evidence.append(f"data: {corrupt.group(0)}")
        if arrow_frame:
            evidence.append(f"raised while reading data ({arrow_frame.group(0)})")
        data = job.inputs.get("data") or {}
        evidence.append(
            f"the job read {data.get('source', '?')} data"
            + (f" at version {str(data['data_version'])[:12]}" if data.get("data_version") else "")
        )
        return "data_corruption", evidence
    parameter = _PARAMETER.search(message)
    if short in _PARAMETER_ERRORS and parameter:
        evidence.append(f"parameter: {parameter.group(0)}")
        evidence.append(
            f"the job's hyperparameters: {json.dumps(job.inputs.get('hyperparameters'))}"
        )
        return "hyperparameter_error", evidence
    return "unknown", evidence


def _mlflow_params(
    model_name: str, settings: Settings
) -> tuple[dict[str, Any], str | None, str] | None:
    """``hp.*`` parameters and the algorithm of the model's newest finished MLflow run."""
    import mlflow
    import yaml

    from retailml.training._tracking import ensure_tracking

    ensure_tracking(settings)
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`retailml.model_name` = '{model_name}' and status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        return None
    run = runs[0]
    params: dict[str, Any] = {}
    for key, value in run.data.params.items():
        if key.startswith("hp."):
            try:
                params[key[3:]] = yaml.safe_load(value)
            except yaml.YAMLError:
                params[key[3:]] = value
    return params, run.data.tags.get("retailml.algorithm"), f"MLflow run {run.info.run_id}"
