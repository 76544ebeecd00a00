"""Silver transactions written directly, as ingestion would leave them."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pytest

from retailml.core.settings import Settings
from retailml.core.workspace import Workspace

from .helpers import Line, WriteSilver, write_silver_part


@pytest.fixture
def write_silver(settings: Settings, workspace: Workspace) -> WriteSilver:
    """Write lines as ``part-<run_id>.parquet`` and record a data version, like ingestion."""

    def write(lines: Sequence[Line], *, run_id: str = "x", record: bool = True) -> pa.Table:
        return write_silver_part(settings, lines, run_id=run_id, record=record)

    return write
