"""Read code blocks from the vendored guide and run them as written.

The guide (``docs/ML_PIPELINE_GUIDE.md``) is retailml's contract: its snippets
are read from the file, never copied, so a test fails when the guide and the
package drift apart. The only change is the import rewrite of ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "ML_PIPELINE_GUIDE.md"

#: ARCHITECTURE.md section 2: guide import prefix -> retailml module prefix.
IMPORT_REWRITES: tuple[tuple[str, str], ...] = (
    ("src.domain.validators.", "retailml.validators."),
    ("src.monitoring.enterprise_dashboard", "retailml.monitoring.enterprise_dashboard"),
    ("src.ml.", "retailml."),
)


def rewrite_imports(code: str) -> str:
    """Apply the guide-to-retailml import mapping."""
    for old, new in IMPORT_REWRITES:
        code = code.replace(f"from {old}", f"from {new}").replace(f"import {old}", f"import {new}")
    return code


def block(heading: str, *, index: int = 0, language: str = "python") -> str:
    """The ``index``-th code block after ``heading``, with imports rewritten."""
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(heading)
    blocks = re.findall(rf"```{language}\n(.*?)```", text[start:], flags=re.DOTALL)
    assert len(blocks) > index, f"no {language} block #{index} after {heading!r} in {GUIDE}"
    return rewrite_imports(blocks[index])


def run(code: str, namespace: dict[str, Any] | None = None, *, returns: str | None = None) -> Any:
    """Run guide code that may ``await`` at top level, as the body of a coroutine.

    Args:
        code: The snippet.
        namespace: Names the snippet expects (its inputs); updated with what it defines.
        returns: A name whose value the call returns.
    """
    namespace = {} if namespace is None else namespace
    tail = f"\n    return {returns}" if returns else ""
    source = f"async def __guide__():\n{textwrap.indent(code, '    ')}{tail}\n    return locals()"
    exec(compile(source, str(GUIDE), "exec"), namespace)
    result = asyncio.run(namespace["__guide__"]())
    if returns is None:
        namespace.update(result)
    return result
