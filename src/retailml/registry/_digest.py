"""The SHA-256 digest of a model directory: what the registry records and checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

from retailml.core.errors import NotFoundError, problem

_CHUNK = 1 << 20


def directory_digest(root: Path) -> str:
    """Hex SHA-256 over a directory's files: sorted relative paths, sizes and contents.

    Each file contributes its POSIX relative path, a NUL, its size (8 bytes)
    and its bytes, so renaming, moving, adding, removing or changing any file
    changes the digest, and no two layouts hash the same stream.

    Raises:
        NotFoundError: when ``root`` is not a directory holding at least one file.
    """
    files = (
        sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
        if root.is_dir()
        else []
    )
    if not files:
        raise NotFoundError(
            problem(
                "a model directory with files",
                repr(str(root)),
                "check that the model was saved or logged completely",
                subject="model artifact",
            )
        )
    digest = hashlib.sha256()
    for relative, path in files:
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
