"""The workspace layout and atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from retailml.core.io import atomic_path, atomic_write_text, sha256_file
from retailml.core.settings import Settings
from retailml.core.workspace import LAYOUT, Workspace


def test_init_creates_the_architecture_layout(settings: Settings) -> None:
    ws = Workspace.from_settings(settings)
    assert not ws.exists()
    created = ws.init()
    assert ws.exists()
    assert {p.relative_to(ws.root).as_posix() for p in created} == set(LAYOUT)
    for rel in (
        "data/bronze",
        "data/silver",
        "data/quarantine",
        "features",
        "feature_repo",
        "mlartifacts",
        "lineage",
        "reports",
        "logs",
    ):
        assert (ws.root / rel).is_dir()


def test_init_is_idempotent(workspace: Workspace) -> None:
    assert workspace.init() == []


def test_workspace_follows_retailml_home(settings: Settings) -> None:
    assert Workspace.from_settings(settings).root == settings.home.resolve()


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_directory_replaces_the_whole_directory(tmp_path: Path) -> None:
    target = tmp_path / "table"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a.parquet").write_text("a")
    with atomic_path(target, directory=True) as tmp:
        (tmp / "b.parquet").write_text("b")
    assert sorted(p.name for p in target.iterdir()) == ["b.parquet"]


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path, chunk_size=1000) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
