"""Quality-control verdicts: what the QC stage says about each segmented structure.

The value types live here, below every stage, because measurement (which values may feed
indices and reference comparisons), encoding (SR, SEG, PDF) and the store all read them while
only `myonode.qc` computes them.

- ``pass``: every check ran and found the structure plausible; its values are published and
  may feed z-scores, indices and sarcopenia criteria.
- ``review``: published, but marked; a check found something doubtful or could not run. Its
  values feed nothing derived ("not evaluable: QC").
- ``fail``: implausible (wrong place, wrong size, not muscle); its values are not published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["pass", "review", "fail"]
VERDICTS: tuple[Verdict, ...] = ("pass", "review", "fail")
_RANK = {verdict: n for n, verdict in enumerate(VERDICTS)}


def worst(verdicts: list[Verdict]) -> Verdict:
    """The most severe of several verdicts (``pass`` for none)."""
    return max(verdicts, key=_RANK.__getitem__, default="pass")


@dataclass(frozen=True)
class StructureQuality:
    """One structure's verdict, why (one sentence per doubtful or failed check) and which
    checks ran and passed."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()
    passed: tuple[str, ...] = ()

    def describe(self) -> str:
        """The verdict with its reasons, as one line for reports."""
        if self.reasons:
            return f"QC {self.verdict}: " + " ".join(self.reasons)
        checks = ", ".join(self.passed) if self.passed else "no check ran"
        return f"QC {self.verdict}: plausible ({checks})."


@dataclass
class QualityReport:
    """The QC stage's answer for one label map: a verdict per structure key, notes on the
    whole series (which landmarks were found, which checks could not run), the engine's
    landmarks the image contradicts (their values are not used) and indices the image's
    coverage does not support (e.g. a maximum that lies outside the field of view)."""

    structures: dict[str, StructureQuality] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    doubtful_landmarks: dict[str, str] = field(default_factory=dict)  # engine landmark -> why
    withheld_indices: dict[str, str] = field(default_factory=dict)  # index key -> why

    def verdict(self, key: str) -> Verdict:
        """A structure's verdict; one QC never looked at is ``review``, never ``pass``."""
        found = self.structures.get(key)
        return found.verdict if found is not None else "review"

    def describe(self, key: str) -> str:
        """A structure's verdict and reasons as one line (also for one never looked at)."""
        found = self.structures.get(key)
        return found.describe() if found is not None else f"QC {self.verdict(key)}: not checked."

    def passed(self, key: str) -> bool:
        return self.verdict(key) == "pass"

    def counts(self) -> Mapping[Verdict, int]:
        return {v: sum(q.verdict == v for q in self.structures.values()) for v in VERDICTS}
