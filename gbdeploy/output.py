"""What the user reads while gbdeploy works: steps with durations, plans, and a summary.

Everything goes through one `Reporter`, so the token is redacted in one place and tests can
capture exactly what a user would see.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from .errors import redact


@dataclass
class StepRecord:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class Reporter:
    """`→ name … ok (1.2s)` per step. What is said while a step runs goes on its own indented
    lines, and the step's outcome then follows them."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    secrets: tuple[str, ...] = ()
    records: list[StepRecord] = field(default_factory=list)
    _open: str | None = field(default=None, repr=False)  # a step header awaiting its outcome

    def say(self, text: str = "") -> None:
        if self._open:
            self._write("\n")
            self._open = ""  # the header is finished; the outcome gets its own line
        indent = "  " if self._open == "" else ""
        self._write("".join(f"{indent}{line}\n" for line in (text.splitlines() or [""])))

    def _write(self, text: str) -> None:
        self.stream.write(redact(text, *self.secrets))
        self.stream.flush()

    def plan(self, title: str, lines: list[str]) -> None:
        """A dry-run plan: the exact operations, one per line, nothing executed."""
        self.say(f"{title} (dry run: nothing is changed)")
        for number, line in enumerate(lines, 1):
            self.say(f"  {number:2}. {line}")

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """On an exception the step is marked failed and the exception propagates."""
        record = StepRecord(name, 0.0, ok=False)
        self._write(f"→ {name} … ")
        self._open = name
        started = time.monotonic()
        try:
            yield record
        except BaseException:
            record.seconds = time.monotonic() - started
            self.records.append(record)
            self._close(f"FAILED ({record.seconds:.1f}s)")
            raise
        record.seconds = time.monotonic() - started
        record.ok = True
        self.records.append(record)
        suffix = f" {record.detail}" if record.detail else ""
        self._close(f"ok ({record.seconds:.1f}s){suffix}")

    def _close(self, outcome: str) -> None:
        interrupted = self._open == ""
        name = self.records[-1].name
        self._open = None
        self._write(f"  {name}: {outcome}\n" if interrupted else f"{outcome}\n")

    def summary(self) -> None:
        if not self.records:
            return
        width = max(len(r.name) for r in self.records)
        self.say("summary:")
        for r in self.records:
            mark = "ok  " if r.ok else "FAIL"
            detail = f"  {r.detail}" if r.detail else ""
            self.say(f"  {mark} {r.name:<{width}}  {r.seconds:7.1f}s{detail}")


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
