"""A transaction of steps: run them in order; on any failure (Ctrl-C and SIGTERM too) run the undo
of each step that began, newest first, and report what could not be undone.

Nothing here knows about ssh or deploys: a step holds the command objects it runs (the plan
prints them, and its function sends these same objects) and a function that runs them; its undo
likewise. A dry run returns the `Plan`; a run executes that plan's steps. Tested with fake steps.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field

from ..output import Reporter


@dataclass(eq=False)
class Command:
    """One script a step sends to the target. The plan lists these objects and the step's function
    sends these same objects; the text is rendered when it is shown or sent, from the state of
    that moment (a `finish` sent after the lock found the binary unchanged says `unchanged`)."""

    name: str
    render: Callable[[], str]

    @property
    def text(self) -> str:
        return self.render()

    @classmethod
    def fixed(cls, text: str, name: str = "") -> Command:
        return cls(name or (text.splitlines() or [""])[0], lambda: text)


def _commands(commands: list[Command] | list[str]) -> list[Command]:
    return [c if isinstance(c, Command) else Command.fixed(c) for c in commands]


@dataclass
class Undo:
    commands: list[Command]  # (text is taken too, as a fixed command)
    run: Callable[[], None]
    restores_service: bool = False  # part of putting the running service back
    # Whether there is anything of ours to undo that the user should see: when not (e.g. the
    # lock was refused, so it is not ours), the undo still runs, unreported and best-effort.
    shown: Callable[[], bool] = lambda: True

    def __post_init__(self) -> None:
        self.commands = _commands(self.commands)


@dataclass
class Step:
    """One operation: the commands it runs, how to run them, and how to undo them."""

    name: str
    commands: list[Command]  # (text is taken too, as a fixed command)
    run: Callable[[], str | None]
    undo: Undo | None = None
    summary: str = ""  # one line for the short plan; default: the first command's first line
    # Asked as the step's turn comes: a reason to skip it ("" runs it). A skipped step has not
    # begun: it is not undone.
    skip_when: Callable[[], str] | None = None

    def __post_init__(self) -> None:
        self.commands = _commands(self.commands)

    def plan_lines(self, *, verbose: bool = False) -> list[str]:
        if not verbose:
            line = self.summary or (self.commands[0].text.splitlines()[0] if self.commands else "")
            undo = "  (undone on failure)" if self.undo else ""
            return [f"{self.name}: {line}{undo}"]
        lines = [f"{self.name}: {_indent(c.text)}" for c in self.commands] or [self.name]
        if self.undo:
            lines += [f"    undo on failure: {_indent(c.text)}" for c in self.undo.commands]
        return lines


def _indent(command: str) -> str:
    return command.replace("\n", "\n        ")


def plan_lines(steps: list[Step], *, verbose: bool = False) -> list[str]:
    return [line for step in steps for line in step.plan_lines(verbose=verbose)]


@dataclass
class Plan:
    """What an operation does, in order: a dry run returns it (the command layer prints it with
    `show_plan`), a run executes these same steps."""

    title: str
    steps: list[Step]
    note: str = ""  # a line after the plan


PLAN_NOTE = "(each step in one line: -v prints every remote script in full)"


def show_plan(plan: Plan, reporter: Reporter, *, verbose: bool = False) -> None:
    reporter.plan(plan.title, plan_lines(plan.steps, verbose=verbose))
    if plan.note and not verbose:
        reporter.say(plan.note)


@dataclass
class Undone(Exception):
    """The steps failed and were undone; `problems` lists the undos that failed."""

    error: BaseException
    done: list[str]  # names of the steps that began
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def restore_failed(self) -> bool:
        return bool(self.problems)


def execute(
    steps: list[Step],
    reporter: Reporter,
    *,
    interrupts: Callable[[], AbstractContextManager[threading.Event | None]] | None = None,
    before_undo: Callable[[BaseException], None] | None = None,
    cause: Callable[[BaseException], str] = lambda e: str(e),
) -> None:
    """Run `steps`; on failure undo the ones that began (the failing one too: its undo copes with
    a partial run) and raise `Undone`. `interrupts()` is a context manager active while the
    steps run that gives the event a cancel sets (see `interrupts_abort`): once set, the step
    that runs ends as interrupted however it ends, and no further step begins. `before_undo`
    runs first (e.g. drop the connection)."""
    done: list[Step] = []
    cancelled: threading.Event | None = None
    try:
        with interrupts() if interrupts else nullcontext() as cancelled:
            for step in steps:
                _stop_if(cancelled)
                reason = step.skip_when() if step.skip_when is not None else ""
                if reason:
                    with reporter.step(step.name) as record:
                        record.detail = f"skipped ({reason})"
                    continue  # not begun: nothing to undo
                done.append(step)
                with reporter.step(step.name) as record:
                    reporter.remote_commands([c.text for c in step.commands])  # -v
                    try:
                        record.detail = step.run() or ""
                    except Exception as error:
                        _stop_if(cancelled, error)
                        raise
                    _stop_if(cancelled)
    except BaseException as error:
        raise undo(done, error, reporter, before_undo=before_undo, cause=cause) from error


def _stop_if(cancelled: threading.Event | None, error: BaseException | None = None) -> None:
    """A cancel came: whatever the step did after it (most often: failed on the cut
    connection) counts as interrupted."""
    if cancelled is not None and cancelled.is_set():
        raise KeyboardInterrupt from error


def undo(
    done: list[Step],
    error: BaseException,
    reporter: Reporter,
    *,
    before_undo: Callable[[BaseException], None] | None = None,
    cause: Callable[[BaseException], str] = lambda e: str(e),
) -> Undone:
    outcome = Undone(error, [step.name for step in done])
    todo = [step for step in reversed(done) if step.undo is not None]
    if before_undo:
        before_undo(error)
    for step in [s for s in todo if s.undo is not None and not s.undo.shown()]:
        todo.remove(step)
        with suppress(Exception):
            step.undo.run()
    if todo:
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else cause(error)
        reporter.say(f"undoing after: {why}")
    for step in todo:
        assert step.undo is not None
        if step.undo.restores_service and outcome.problems:
            continue  # never start anything on top of a binary that could not be put back
        try:
            with reporter.step(f"undo {step.name}"):
                step.undo.run()
        except Exception as failure:
            text = f"undo {step.name}: {cause(failure)}"
            if step.undo.restores_service:
                outcome.problems.append(text)
            else:
                outcome.warnings.append(text)
                reporter.say(f"  warning: {text}")
    return outcome


@contextmanager
def interrupts_abort(cut: Callable[[], None]) -> Iterator[threading.Event | None]:
    """Ctrl-C and SIGTERM (a cancelled CI job) call `cut` (e.g. shut the connection's socket,
    which ends any wait on it with an error) and set the event `execute` reads, so the undo
    runs. The handler raises nothing: an exception raised from a signal handler lands on
    whatever bytecode the main thread was running, e.g. inside paramiko between taking a lock
    and the `try` that releases it, and the undo's next send then waits for that lock forever.
    Only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    cancelled = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        cancelled.set()
        cut()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancelled
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
