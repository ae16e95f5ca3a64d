"""The verdicts of `spectro-fx validate`: one line per check, and the report as printed and as JSON.

What every check returns; the command prints them and writes ``--json``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class CheckResult:
    """The verdict of one check: ``summary`` is its one line; ``findings`` say what failed."""

    name: str
    passed: bool
    summary: str
    findings: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}  {self.name:<14} {self.summary} ({self.seconds:.1f} s)"


@dataclass
class Report:
    """All checks of one run, as printed and as written to ``--json``."""

    model: str
    chain: str
    values: dict[str, Any]
    strictness: int
    seed: int
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def summary(self) -> str:
        failed = [r.name for r in self.results if not r.passed]
        text = f"{len(self.results)} checks at strictness {self.strictness}, seed {self.seed}: "
        text += f"{sum(r.passed for r in self.results)} passed"
        if failed:
            text += f", {len(failed)} failed ({', '.join(failed)})"
        return text + f" in {self.seconds:.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": self.model,
            "chain": self.chain,
            "values": self.values,
            "strictness": self.strictness,
            "seed": self.seed,
            "seconds": round(self.seconds, 2),
            "machine": {
                "platform": platform.platform(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            "checks": [
                {
                    "name": r.name,
                    "passed": r.passed,
                    "summary": r.summary,
                    "findings": r.findings,
                    "figures": r.figures,
                    "seconds": round(r.seconds, 2),
                }
                for r in self.results
            ],
        }
