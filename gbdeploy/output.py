"""What the user reads while gbdeploy works: steps with durations, plans, and a summary.

Everything goes through one `Reporter`, so the token is redacted in one place and tests can
capture exactly what a user would see. `verbosity` is -1 (`-q`), 0, or 1 and more (`-v`): quiet
hides progress but never a result or a failure; verbose adds the full remote scripts of a plan.
Colour is used on a terminal unless NO_COLOR is set (https://no-color.org), and only to make
ok / FAILED / interrupted stand out: the words are the same without it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from .errors import redact

GREEN, RED, YELLOW, BOLD, RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[0m"


@dataclass
class OutputOptions:
    """Set once per command line by the program (`-v`, `-q`); read by every new Reporter."""

    verbosity: int = 0


options = OutputOptions()


def wants_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def short_sha(sha: object, length: int = 10) -> str:
    """A commit or sha256 as tables show it; `?` when unknown."""
    return str(sha)[:length] if sha else "?"


@dataclass
class StepRecord:
    name: str
    seconds: float
    ok: bool
    detail: str = ""
    interrupted: bool = False


@dataclass
class Reporter:
    """`→ name … ok (1.2s)` per step. What is said while a step runs goes on its own indented
    lines, and the step's outcome then follows them."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    secrets: tuple[str, ...] = ()
    records: list[StepRecord] = field(default_factory=list)
    verbosity: int = field(default_factory=lambda: options.verbosity)
    color: bool | None = None  # None: decided from the stream and NO_COLOR
    _open: str | None = field(default=None, repr=False)  # a step header awaiting its outcome
    _reader_gone: bool = field(default=False, repr=False)
    _held: list[str] | None = field(default=None, repr=False)  # quiet: what a running step said
    # Lines that many remote scripts begin with (a deploy's paths and shell functions): with -v
    # they are shown in full once, and in every later script as one line that says so.
    shared: str = ""
    # Further blocks shown the same way (the probes' functions inside a deploy's checks).
    more_shared: list[str] = field(default_factory=list)
    _shared_shown: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.color is None:
            self.color = wants_color(self.stream)

    @property
    def verbose(self) -> bool:
        return self.verbosity > 0

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    def say(self, text: str = "") -> None:
        """A line the user sees: at once, or with `-q` only if the step it belongs to fails."""
        if self._held is not None:
            self._held += [f"  {line}\n" for line in (text.splitlines() or [""])]
            return
        if self._open:
            self._write("\n")
            self._open = ""  # the header is finished; the outcome gets its own line
        indent = "  " if self._open == "" else ""
        self._write("".join(f"{indent}{line}\n" for line in (text.splitlines() or [""])))

    def info(self, text: str = "") -> None:
        """Progress that `-q` hides."""
        if not self.quiet:
            self.say(text)

    def detail(self, text: str = "") -> None:
        """What only `-v` shows."""
        if self.verbose:
            self.say(text)

    def write(self, text: str) -> None:
        """Text as it is (e.g. a remote log), redacted like everything else."""
        self._write(text)

    def paint(self, text: str, colour: str) -> str:
        return f"{colour}{text}{RESET}" if self.color else text

    def _write(self, text: str) -> None:
        if self._reader_gone:
            return
        try:
            self.stream.write(redact(text, *self.secrets))
            self.stream.flush()
        except BrokenPipeError:
            # The reader went away (`| head`): the operation itself must go on to its end (a
            # deploy half done is worse than output lost), so stop writing instead of failing.
            self._reader_gone = True
            _silence(self.stream)

    def plan(self, title: str, lines: list[str], *, brief: bool = False) -> None:
        """A dry-run plan: the exact operations, one per line, nothing executed. With `brief`,
        an operation that is a multi-line remote script shows only its first line unless `-v`."""
        self.say(f"{title} (dry run: nothing is changed)")
        hidden = 0
        for number, line in enumerate(lines, 1):
            first, *rest = line.splitlines() or [""]
            if brief and rest and not self.verbose:
                hidden += len(rest)
                self.say(f"  {number:2}. {first}  [+{len(rest)} lines]")
            else:
                self.say(f"  {number:2}. {self.once_shared(line)}")
        if hidden:
            self.say(f"({hidden} more lines of remote script: -v shows every command in full)")

    def remote_commands(self, commands: list[str]) -> None:
        """With -v, the exact commands a step is about to run on the target."""
        if self.verbose:
            for command in commands:
                self.say("$ " + self.once_shared(command).replace("\n", "\n  "))

    def once_shared(self, text: str) -> str:
        """`text` with each `shared` block (matched line by line, whatever their indent; the
        first may follow a label such as `lock: `) in full the first time, then as one line."""
        for shared in [self.shared, *self.more_shared]:
            text = self._once(shared, text)
        return text

    def _once(self, shared: str, text: str) -> str:
        block = [line.strip() for line in shared.splitlines() if line.strip()]
        lines = text.splitlines()
        if not block:
            return text
        out: list[str] = []
        at = 0
        while at < len(lines):
            head = lines[at]
            found = (
                head.rstrip().endswith(block[0])
                and [line.strip() for line in lines[at + 1 : at + len(block)]] == block[1:]
            )
            if not found:
                out.append(head)
                at += 1
            elif shared not in self._shared_shown:
                self._shared_shown.add(shared)
                out += lines[at : at + len(block)]
                at += len(block)
            else:
                label = head.rstrip()[: -len(block[0])]
                out.append(f"{label}[the {len(block)} shared lines shown in full above]")
                at += len(block)
        return "\n".join(out) if out != lines else text

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """On an exception the step is marked failed (interrupted, for Ctrl-C) and the exception
        propagates. With `-q` nothing is written unless the step fails: then its header, what
        was said under it, and the outcome."""
        record = StepRecord(name, 0.0, ok=False)
        holding = self.quiet and self._held is None
        if holding:
            self._held = []
        elif not self.quiet:
            self._write(f"→ {name} … ")
            self._open = name
        started = time.monotonic()
        try:
            yield record
        except BaseException as error:
            record.seconds = time.monotonic() - started
            record.interrupted = isinstance(error, KeyboardInterrupt)
            self.records.append(record)
            outcome = "interrupted" if record.interrupted else "FAILED"
            colour = YELLOW if record.interrupted else RED
            self._fail(name, f"{self.paint(outcome, colour)} ({seconds(record.seconds)})", holding)
            raise
        finally:
            if holding:
                self._held = None  # a success says nothing with -q
        record.seconds = time.monotonic() - started
        record.ok = True
        self.records.append(record)
        suffix = f" {record.detail}" if record.detail else ""
        if not self.quiet:
            self._close(f"{self.paint('ok', GREEN)} ({seconds(record.seconds)}){suffix}")

    def _fail(self, name: str, outcome: str, holding: bool) -> None:
        if not self.quiet:
            self._close(outcome)
        elif not holding and self._held is not None:  # a step inside a held one
            self._held.append(f"  → {name} … {outcome}\n")
        elif self._held:
            self._write(f"→ {name} …\n" + "".join(self._held) + f"  ↳ {outcome}\n")
        else:
            self._write(f"→ {name} … {outcome}\n")

    def _close(self, outcome: str) -> None:
        header_broken = self._open == ""
        self._open = None
        # Lines were said under the header: the outcome goes on its own line, without the
        # step's name a second time.
        self._write(f"  ↳ {outcome}\n" if header_broken else f"{outcome}\n")

    def summary(self) -> None:
        if not self.records or self.quiet:
            return
        width = max(len(r.name) for r in self.records)
        self.say("summary:")
        for r in self.records:
            if r.ok:
                mark = self.paint("ok  ", GREEN)
            elif r.interrupted:
                mark = self.paint("INT ", YELLOW)
            else:
                mark = self.paint("FAIL", RED)
            detail = f"  {r.detail}" if r.detail else ""
            self.say(f"  {mark} {r.name:<{width}}  {seconds(r.seconds):>7}{detail}")


def seconds(value: float) -> str:
    """A step's duration: hundredths below ten seconds (a deploy's exchanges take a few)."""
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


def _silence(stream: TextIO) -> None:
    """Point a closed pipe's file descriptor at /dev/null, so the interpreter's final flush does
    not complain either."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def table(rows: list[list[str]], *, header: list[str] | None = None) -> list[str]:
    """Rows as left-aligned columns two spaces apart (the last column is not padded)."""
    every = ([header] if header else []) + rows
    if not every:
        return []
    widths = [max(len(row[i]) for row in every) for i in range(len(every[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in every
    ]


# --- progress of a long transfer
class TerminalProgress:
    """A progress callback that keeps one updating line on a terminal: bytes, rate, percent.

    Writes nothing when `stream` is not a TTY (CI logs, pipes); redraws at most every `interval`
    seconds, and always once at 100 %, then ends the line (unless `end_line` is false: then whoever
    owns the line finishes it). The rate counts from the moment it is made, so make it right
    before the upload starts.
    """

    def __init__(
        self,
        label: str = "upload",
        stream: TextIO | None = None,
        *,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        end_line: bool = True,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.end_line = end_line
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = clock()
        self.last_draw = float("-inf")
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or self.finished:
            return
        now = self.clock()
        complete = done >= total
        if not complete and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        self.stream.write("\r" + self.line(done, total, now - self.started) + "\x1b[K")
        if complete:
            if self.end_line:
                self.stream.write("\n")
            self.finished = True
        self.stream.flush()

    def line(self, done: int, total: int, elapsed: float) -> str:
        percent = 100.0 * done / total if total else 100.0
        rate = f"{human_bytes(done / elapsed)}/s" if elapsed > 0 else "-"
        return f"{self.label}: {human_bytes(done)} / {human_bytes(total)}  {rate}  {percent:3.0f}%"


class StepProgress(TerminalProgress):
    """The upload's progress, drawn over its step's header `→ upload … ` on a terminal."""

    def line(self, done: int, total: int, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        return (
            f"→ {self.label} … {human_bytes(done)} / {human_bytes(total)} ({human_bytes(rate)}/s) "
        )
