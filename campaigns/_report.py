"""What a campaign found: its figures, in the order measured, and its failures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# A campaign that goes badly wrong can record thousands of failures; the first ones are
# the ones worth reading, the rest are counted.
KEPT_FAILURES = 50


@dataclass
class Report:
    name: str
    long: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0

    def figure(self, name: str, value: Any) -> None:
        self.figures[name] = value

    def add(self, name: str, amount: int = 1) -> None:
        """Count something (requests served, inputs tried, kills survived)."""
        self.figures[name] = self.figures.get(name, 0) + amount

    def fail(self, message: str) -> None:
        self.failure_count += 1
        if len(self.failures) < KEPT_FAILURES:
            self.failures.append(message)

    def check(self, condition: bool, message: str) -> bool:
        if not condition:
            self.fail(message)
        return condition

    @property
    def ok(self) -> bool:
        return self.failure_count == 0

    def render(self) -> str:
        mode = "long" if self.long else "short"
        lines = [f"== {self.name} ({mode}): "
                 f"{'ok' if self.ok else f'{self.failure_count} failure(s)'}"]
        width = max((len(k) for k in self.figures), default=0)
        for key, value in self.figures.items():
            shown = f"{value:,.2f}" if isinstance(value, float) else (
                f"{value:,}" if isinstance(value, int) and not isinstance(value, bool)
                else str(value))
            lines.append(f"  {key.ljust(width)}  {shown}")
        for message in self.failures:
            lines.append(f"  FAIL {message}")
        if self.failure_count > len(self.failures):
            lines.append(f"  … and {self.failure_count - len(self.failures)} more")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "long": self.long, "ok": self.ok,
                "figures": json.loads(json.dumps(self.figures, default=str)),
                "failures": self.failures, "failure_count": self.failure_count}
