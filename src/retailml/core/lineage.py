"""OpenLineage run events for every arrow of the lifecycle, from any layer.

Ingestion, feature builds, training and registration each call
:func:`emit_run` with the job, its input and output datasets and facets; the
event goes to ``<home>/lineage/events.jsonl`` (always: it is what ``retailml
lineage show`` reads) and, when ``RETAILML_LINEAGE_URL`` is set, to that
Marquez-compatible endpoint over HTTP as well. The emitter lives in ``core``
so every layer can record lineage without importing the ``lineage`` package
(which builds the queries on top of these events).

Emitting never breaks the work it describes: a failure to write or send an
event is logged as a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    dataset_version_dataset,
    documentation_job,
    source_code_location_job,
)
from openlineage.client.serde import Serde
from openlineage.client.transport.http import HttpConfig, HttpTransport

from retailml import __version__
from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace

__all__ = ["EVENTS_FILE", "Dataset", "emit_run", "read_events"]

logger = logging.getLogger(__name__)

EVENTS_FILE: Final = "events.jsonl"
PRODUCER: Final = f"https://github.com/retailml/retailml/tree/{__version__}"
_WRITE_LOCK = threading.Lock()


@attr.define
class RetailMLRunFacet(RunFacet):
    """retailml's own run facet: parameters, features and transformations of a run."""

    parameters: dict[str, Any] = attr.field(factory=dict)
    features: list[str] = attr.field(factory=list)
    transformations: list[str] = attr.field(factory=list)
    parents: list[str] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return "https://retailml.dev/spec/facets/1-0-0/RetailMLRunFacet.json"


@attr.define(frozen=True)
class Dataset:
    """A dataset of a lineage event: a name and, when known, its version."""

    name: str
    version: str | None = None


def _dataset(value: str | Dataset) -> Dataset:
    return value if isinstance(value, Dataset) else Dataset(str(value))


def _events_path(settings: Settings) -> Path:
    return Workspace.from_settings(settings).root / "lineage" / EVENTS_FILE


def emit_run(
    job: str,
    *,
    inputs: Sequence[str | Dataset] = (),
    outputs: Sequence[str | Dataset] = (),
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    features: Sequence[str] = (),
    transformations: Sequence[str] = (),
    parents: Sequence[str] = (),
    code_version: str | None = None,
    run_id: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any] | None:
    """Record one completed run of ``job`` as an OpenLineage ``COMPLETE`` event.

    Args:
        job: The job name, e.g. ``"ingest"``, ``"features.customer_rfm"``, ``"train.sales_v1"``.
        inputs: Datasets read (names, or :class:`Dataset` with a version).
        outputs: Datasets written.
        description: What the job does (documentation facet).
        parameters: Hyperparameters or options (retailml run facet).
        features: Feature columns used.
        transformations: Named transformations applied.
        parents: Parent models, for a model derived from others.
        code_version: The git commit of the code (source-code-location facet).
        run_id: The run's UUID; a new one when None.
        settings: retailml settings.

    Returns:
        The event as a JSON-safe dict, or None when it could not be written.
    """
    settings = settings or get_settings()
    namespace = settings.lineage_namespace
    run_uuid = run_id or str(uuid.uuid4())
    job_facets: dict[str, Any] = {}
    if description:
        job_facets["documentation"] = documentation_job.DocumentationJobFacet(description)
    if code_version:
        job_facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git", url="", version=code_version
        )
    run_facets: dict[str, Any] = {
        "retailml": RetailMLRunFacet(
            parameters=json.loads(json.dumps(dict(parameters or {}), default=str)),
            features=[str(f) for f in features],
            transformations=[str(t) for t in transformations],
            parents=[str(p) for p in parents],
        )
    }

    def facets(dataset: Dataset) -> dict[str, Any]:
        if dataset.version is None:
            return {}
        return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(dataset.version)}

    event = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=dt.datetime.now(dt.UTC).isoformat(),
        run=Run(runId=run_uuid, facets=run_facets),
        job=Job(namespace=namespace, name=job, facets=job_facets),
        producer=PRODUCER,
        inputs=[
            InputDataset(namespace=namespace, name=d.name, facets=facets(d))
            for d in map(_dataset, inputs)
        ],
        outputs=[
            OutputDataset(namespace=namespace, name=d.name, facets=facets(d))
            for d in map(_dataset, outputs)
        ],
    )
    payload: dict[str, Any] = json.loads(Serde.to_json(event))
    path = _events_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(payload, sort_keys=True) + "\n"
        with _WRITE_LOCK, path.open("a", encoding="utf-8") as handle:
            handle.write(line)  # one write of one line: appends never interleave
    except OSError as exc:
        logger.warning("lineage event for %s not written to %s: %s", job, path, exc)
        return None
    if settings.lineage_url:
        try:
            client = OpenLineageClient(
                transport=HttpTransport(HttpConfig(url=settings.lineage_url))
            )
            client.emit(event)
        except Exception as exc:  # lineage must never break the work
            logger.warning(
                "lineage event for %s not sent to %s: %s", job, settings.lineage_url, exc
            )
    return payload


def read_events(settings: Settings | None = None) -> Iterator[dict[str, Any]]:
    """The recorded events, oldest first (a torn last line is skipped)."""
    path = _events_path(settings or get_settings())
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                logger.warning("skipped an unreadable line of %s", path)
