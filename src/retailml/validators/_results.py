"""What a data-quality check returns: a verdict, one finding per column, and details."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

CheckName = Literal["missing_values", "outliers", "schema"]


@dataclass(frozen=True)
class Finding:
    """One column's measured outcome.

    Attributes:
        column: The column measured; ``"*"`` for a measurement over all
            checked columns jointly (the isolation forest's).
        measured: The measured value: a share in [0, 1] for missing values and
            outliers, a logical type (or ``"missing"``) for the schema.
        threshold: What ``measured`` was held against: the largest allowed
            share, the expected logical type, or None when nothing was.
        passed: Whether this column meets the threshold.
        message: One line for a person, e.g.
            ``"recency_days: 7.5% missing; expected at most 5.0%"``.
    """

    column: str
    measured: float | str
    threshold: float | str | None
    passed: bool
    message: str


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; truthy when it passed.

    Attributes:
        check: Which check produced it.
        passed: True when every finding passed.
        findings: One per measured column, in frame order.
        details: JSON-serialisable extras (counts, shares, bounds, skipped
            columns, outlier row positions); the keys of each check are listed
            in its method's docstring.
    """

    check: CheckName
    passed: bool
    findings: tuple[Finding, ...]
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    @property
    def failures(self) -> tuple[Finding, ...]:
        """The findings that did not pass."""
        return tuple(finding for finding in self.findings if not finding.passed)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-serialisable data."""
        return {
            "check": self.check,
            "passed": self.passed,
            "findings": [asdict(finding) for finding in self.findings],
            "details": self.details,
        }

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "passed" if self.passed else f"FAILED ({len(self.failures)} failing)"
        lines = [f"{self.check}: {verdict}"]
        lines += [f"  {'ok  ' if f.passed else 'FAIL'} {f.message}" for f in self.findings]
        return "\n".join(lines)
