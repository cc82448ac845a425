"""The result of a scenario: a readable summary, or with --json one JSON object as the last line."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Result:
    scenario: str
    events: int
    rate: float
    unit: str
    baseline_rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    target: str = ""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.rate / self.baseline_rate if self.baseline_rate else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "events": self.events,
            "rate": round(self.rate, 1),
            "unit": self.unit,
            "baseline_rate": round(self.baseline_rate, 1) if self.baseline_rate else None,
            "ratio": round(self.ratio, 3) if self.ratio is not None else None,
        }
        if self.p50_ms is not None:
            out["p50_ms"] = round(self.p50_ms, 2)
        if self.p99_ms is not None:
            out["p99_ms"] = round(self.p99_ms, 2)
        # what else the scenario measured (deliver-batched: the unbatched rate its target is 10x of)
        out |= {k: round(v, 1) for k, v in self.details.items() if isinstance(v, int | float)}
        if self.met is not None:
            out["target_met"] = self.met
        return out

    def summary(self) -> str:
        lines = [f"scenario      {self.scenario}", f"events        {self.events}"]
        lines.append(f"rate          {self.rate:,.0f} {self.unit}")
        if self.baseline_rate:
            lines.append(f"baseline      {self.baseline_rate:,.0f} {self.unit}")
            lines.append(f"ratio         {self.ratio:.2f}")
        if self.p50_ms is not None:
            lines.append(f"p50           {self.p50_ms:.1f} ms")
        if self.p99_ms is not None:
            lines.append(f"p99           {self.p99_ms:.1f} ms")
        for k, v in self.details.items():
            lines.append(f"{k:<13} {v:,.1f}" if isinstance(v, float) else f"{k:<13} {v}")
        if self.target:
            verdict = "" if self.met is None else ("  -> met" if self.met else "  -> MISSED")
            lines.append(f"target        {self.target}{verdict}")
        return "\n".join(lines)


def emit(result: Result, *, as_json: bool) -> None:
    if as_json:
        print(result.summary(), file=sys.stderr)
        sys.stderr.flush()
        print(orjson.dumps(result.as_json()).decode(), flush=True)
    else:
        print(result.summary(), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
