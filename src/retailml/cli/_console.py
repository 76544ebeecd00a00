"""Terminal output: results on stdout, progress and errors on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Results a user reads or pipes.
out = Console(highlight=False, soft_wrap=True)
#: Progress bars, notes and errors, so ``--json`` output stays clean.
err = Console(stderr=True, highlight=False)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr; yields ``advance(n)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:
        task: TaskID = progress.add_task(description, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        yield advance


@contextmanager
def stage_bar(description: str) -> Iterator[Callable[[str, int, int], None]]:
    """A Rich progress bar for staged work; yields ``update(stage, done, total)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=1, stage="")

        def update(stage: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=max(total, 1), stage=stage)

        yield update
