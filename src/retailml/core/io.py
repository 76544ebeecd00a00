"""Atomic file writes: a temporary path in the same directory, then a rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path that becomes ``target`` only if the block succeeds.

    The temporary path sits beside ``target`` so the final ``os.replace`` is a
    rename on one file system: readers see the old file or the new one, never
    half of it. On an exception the temporary path is removed.

    Args:
        target: Final file or directory path.
        directory: Yield a temporary directory instead of a file path.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        tmp.chmod(0o777 & ~_umask())
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        tmp.chmod(0o666 & ~_umask())
    try:
        yield tmp
        if directory and target.exists():
            # A directory cannot be replaced in one rename: move the old one
            # aside first, so readers see the old or the new, never a mix.
            old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
            target.replace(old)
            tmp.replace(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(target: Path, text: str) -> Path:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def sha256_file(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
