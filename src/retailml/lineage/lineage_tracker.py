"""Data and model lineage: the guide's ``LineageTracker``, on OpenLineage events.

::

    tracker = LineageTracker()
    tracker.track_data_pipeline(pipeline_name="sales_feature_engineering",
                                inputs=["bronze_layer.sales_transactions"],
                                outputs=["feature_store.customer_rfm_features"],
                                transformations=["rfm_calculation"])
    tracker.track_model_pipeline(model_name="sales_forecast_prophet", model_version="1.2.0",
                                 training_data="feature_store.sales_features_v2024_01",
                                 features_used=["date"], parent_models=None,
                                 hyperparameters={"seasonality_mode": "multiplicative"},
                                 training_code_version="commit_abc123")
    tracker.upstream("model.sales_forecast_prophet")     # what produced it
    tracker.downstream("bronze_layer.sales_transactions")  # what it feeds

Every call records an OpenLineage ``COMPLETE`` run event through
:func:`retailml.core.lineage.emit_run` (to ``<home>/lineage/events.jsonl``
and, with ``RETAILML_LINEAGE_URL``, to Marquez). retailml records the same
kind of event by itself when it ingests a file (``ingest``: source file ->
``bronze.<file>`` and ``silver.transactions``), builds a feature set
(``features.<set>``: ``silver.transactions`` -> ``feature_set.<set>``),
trains (``train.<model_name>``: feature sets or data -> ``run.<run id>``)
and registers a model (``register.<model>``: ``run.<run id>`` ->
``model.<model>`` at its semantic version).

A model is the dataset ``model.<name>`` (its versions are the dataset
versions of the events that wrote it). The queries walk the graph of
datasets and jobs the events describe: :meth:`LineageTracker.upstream` answers
"what data, code and parameters produced this", :meth:`LineageTracker.downstream`
"which feature sets and models does this feed".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from retailml.core.errors import ConfigError, NotFoundError, problem
from retailml.core.lineage import Dataset, emit_run, read_events
from retailml.core.settings import Settings, get_settings

__all__ = ["LineageGraph", "LineageRecord", "LineageStep", "LineageTracker"]


@dataclass(frozen=True)
class LineageRecord:
    """What a ``track_*`` call recorded."""

    run_id: str
    job: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    event_time: str
    event: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class LineageStep:
    """One job run in a lineage answer: what it read and wrote, with its facets."""

    job: str
    run_id: str
    event_time: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    versions: dict[str, str]
    parameters: dict[str, Any]
    features: tuple[str, ...]
    transformations: tuple[str, ...]
    code_version: str | None


@dataclass(frozen=True)
class LineageGraph:
    """The answer to an upstream or downstream question."""

    dataset: str
    direction: str
    datasets: tuple[str, ...]
    steps: tuple[LineageStep, ...]

    @property
    def models(self) -> tuple[str, ...]:
        """The models (``model.<name>``) among the datasets."""
        return tuple(d for d in self.datasets if d.startswith("model."))

    @property
    def feature_sets(self) -> tuple[str, ...]:
        """The feature sets (``feature_set.<name>``) among the datasets."""
        return tuple(d for d in self.datasets if d.startswith("feature_set."))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        return {
            "dataset": self.dataset,
            "direction": self.direction,
            "datasets": list(self.datasets),
            "steps": [vars(step) | {"inputs": list(step.inputs)} for step in self.steps],
        }


def _names(values: Sequence[str] | str | None, what: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    names = [str(v) for v in values]
    if any(not n.strip() for n in names):
        raise ConfigError(problem(f"non-empty {what} names", repr(list(values)), "name each one"))
    return names


def _step(event: Mapping[str, Any]) -> LineageStep:
    facets = event.get("run", {}).get("facets", {}).get("retailml", {})
    code = event.get("job", {}).get("facets", {}).get("sourceCodeLocation", {})
    versions = {
        d["name"]: d["facets"]["version"]["datasetVersion"]
        for d in [*event.get("inputs", []), *event.get("outputs", [])]
        if "version" in d.get("facets", {})
    }
    return LineageStep(
        job=str(event["job"]["name"]),
        run_id=str(event["run"]["runId"]),
        event_time=str(event["eventTime"]),
        inputs=tuple(d["name"] for d in event.get("inputs", [])),
        outputs=tuple(d["name"] for d in event.get("outputs", [])),
        versions=versions,
        parameters=dict(facets.get("parameters", {})),
        features=tuple(facets.get("features", [])),
        transformations=tuple(facets.get("transformations", [])),
        code_version=code.get("version"),
    )


class LineageTracker:
    """Record and query lineage (see the module docstring).

    Args:
        settings: retailml settings (workspace, namespace, optional Marquez URL).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    def __repr__(self) -> str:
        return f"LineageTracker(namespace={self.settings.lineage_namespace!r})"

    def _record(self, event: dict[str, Any] | None, job: str) -> LineageRecord:
        if event is None:
            raise ConfigError(
                problem(
                    "a writable lineage directory",
                    f"the event of {job!r} could not be written (see the log)",
                    "check the permissions of <home>/lineage",
                )
            )
        step = _step(event)
        return LineageRecord(
            step.run_id, step.job, step.inputs, step.outputs, step.event_time, event
        )

    def track_data_pipeline(
        self,
        pipeline_name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        transformations: Sequence[str] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> LineageRecord:
        """Record a data pipeline run: ``inputs`` -> ``transformations`` -> ``outputs``.

        Args:
            pipeline_name: The job name.
            inputs: Datasets read.
            outputs: Datasets written.
            transformations: Named transformations applied.
            parameters: Options of the run.
            versions: ``dataset -> version`` for inputs or outputs whose version is known.

        Raises:
            ConfigError: for an empty name.
        """
        names = _names(pipeline_name, "pipeline")
        known = dict(versions or {})
        return self._record(
            emit_run(
                names[0],
                inputs=[Dataset(n, known.get(n)) for n in _names(inputs, "input")],
                outputs=[Dataset(n, known.get(n)) for n in _names(outputs, "output")],
                transformations=_names(transformations, "transformation"),
                parameters=parameters,
                description=f"data pipeline {names[0]}",
                settings=self.settings,
            ),
            names[0],
        )

    def track_model_pipeline(
        self,
        model_name: str,
        model_version: str,
        training_data: str | Sequence[str],
        features_used: Sequence[str] | None = None,
        parent_models: Sequence[str] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        training_code_version: str | None = None,
    ) -> LineageRecord:
        """Record how a model version was produced.

        The output is the dataset ``model.<model_name>`` at ``model_version``;
        parent models are inputs too (``model.<parent>``).
        """
        name = _names(model_name, "model")[0]
        parents = _names(parent_models, "parent model")
        inputs: list[Dataset] = [Dataset(n) for n in _names(training_data, "training data")]
        inputs += [Dataset(p if p.startswith("model.") else f"model.{p}") for p in parents]
        return self._record(
            emit_run(
                f"train.{name}",
                inputs=inputs,
                outputs=[Dataset(f"model.{name}", str(model_version))],
                parameters=hyperparameters,
                features=_names(features_used, "feature"),
                parents=parents,
                code_version=training_code_version,
                description=f"training of model {name}",
                settings=self.settings,
            ),
            f"train.{name}",
        )

    # --- queries ---------------------------------------------------------------------------

    def steps(self) -> list[LineageStep]:
        """Every recorded run, oldest first."""
        return [_step(event) for event in read_events(self.settings)]

    def upstream(self, dataset: str, version: str | None = None) -> LineageGraph:
        """What produced ``dataset``: every job and dataset on a path into it.

        Args:
            dataset: A dataset name, e.g. ``model.sales_forecast`` or ``feature_set.customer_rfm``.
            version: Only the runs that wrote this version of ``dataset``.

        Raises:
            NotFoundError: when no recorded run wrote the dataset (or that version).
        """
        steps = self.steps()
        writers = [s for s in steps if dataset in s.outputs]
        if version is not None:
            writers = [s for s in writers if s.versions.get(dataset) == version]
        if not writers:
            raise self._unknown(dataset, steps, "written by", version)
        return self._walk(dataset, steps, writers, upstream=True)

    def downstream(self, dataset: str) -> LineageGraph:
        """What ``dataset`` feeds: every job and dataset on a path out of it.

        Raises:
            NotFoundError: when no recorded run read or wrote the dataset.
        """
        steps = self.steps()
        readers = [s for s in steps if dataset in s.inputs]
        if not readers and not any(dataset in s.outputs for s in steps):
            raise self._unknown(dataset, steps, "read by", None)
        return self._walk(dataset, steps, readers, upstream=False)

    def _walk(
        self,
        dataset: str,
        steps: Sequence[LineageStep],
        first: Sequence[LineageStep],
        *,
        upstream: bool,
    ) -> LineageGraph:
        """Follow the runs that link datasets, respecting time.

        A run can only have read what an earlier run wrote: upstream, a dataset's
        producers count up to the time of the run that read it (so a file ingested
        after a model was trained is not in that model's lineage, although silver
        grew from it later); downstream, its consumers count from the time of the
        run that wrote it. A dataset reached again under a wider time bound is
        followed again.
        """
        seen_steps: dict[str, LineageStep] = {}
        bounds: dict[str, datetime] = {}
        queue: deque[LineageStep] = deque(first)
        while queue:
            step = queue.popleft()
            if step.run_id in seen_steps:
                continue
            seen_steps[step.run_id] = step
            at = _event_time(step)
            for name in step.inputs if upstream else step.outputs:
                known = bounds.get(name)
                if known is not None and (at <= known if upstream else at >= known):
                    continue
                bounds[name] = at
                queue.extend(
                    s
                    for s in steps
                    if name in (s.outputs if upstream else s.inputs)
                    and (_event_time(s) <= at if upstream else _event_time(s) >= at)
                )
        ordered = sorted(seen_steps.values(), key=lambda s: s.event_time)
        return LineageGraph(
            dataset=dataset,
            direction="upstream" if upstream else "downstream",
            datasets=tuple(bounds),
            steps=tuple(ordered),
        )

    @staticmethod
    def _unknown(
        dataset: str, steps: Sequence[LineageStep], relation: str, version: str | None
    ) -> NotFoundError:
        known = sorted({n for s in steps for n in (*s.inputs, *s.outputs)})
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        what = f"{dataset!r}" + (f" at version {version!r}" if version else "")
        return NotFoundError(
            problem(
                f"a dataset {relation} a recorded run, among: {shown or 'none recorded yet'}",
                what,
                "check the name (models are model.<name>, feature sets feature_set.<name>)",
                subject="lineage",
            )
        )


def _event_time(step: LineageStep) -> datetime:
    """A step's event time, timezone-aware (OpenLineage writes ISO 8601)."""
    at = datetime.fromisoformat(step.event_time.replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
