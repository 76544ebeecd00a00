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
from typing import Any


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


def read_yaml_mapping(path: Path, *, subject: str, shape: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping.

    Args:
        path: The file.
        subject: What names the file in messages (an option such as ``--mapping``).
        shape: What the mapping should contain, for the message when it does not.

    Raises:
        ConfigError: The file is missing, unreadable, not YAML, or not a mapping;
            the message says which, in the expected / got / fix form.
    """
    import yaml

    from retailml.core.errors import ConfigError, problem

    if not path.is_file():
        raise ConfigError(
            problem(
                "an existing YAML file",
                f"no file at {str(path)!r}",
                f"pass the path of a YAML file of {shape}",
                subject=subject,
            )
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(
            problem("valid UTF-8 YAML", f"a parse error ({exc})", "fix the YAML", subject=str(path))
        ) from exc
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            problem(
                f"a YAML mapping of {shape}",
                f"{type(data).__name__} {data!r}"[:120],
                f"write {shape}, one 'name: value' per line",
                subject=str(path),
            )
        )
    return data
