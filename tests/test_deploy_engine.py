"""The transaction engine with fake steps: order, undo newest first, what a failed undo means."""

from __future__ import annotations

import io
import os
import signal
import threading

import pytest

from gbdeploy.deploy.engine import Step, Undo, Undone, execute, interrupts_abort, plan_lines
from gbdeploy.output import Reporter


class Target:
    """A pretend target that records what ran."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def step(
        self,
        name: str,
        *,
        fails: bool = False,
        undo: bool = True,
        undo_fails: bool = False,
        restores: bool = False,
    ) -> Step:
        def run() -> str:
            self.log.append(f"run {name}")
            if fails:
                raise RuntimeError(f"{name} broke")
            return f"{name} done"

        def undo_run() -> None:
            self.log.append(f"undo {name}")
            if undo_fails:
                raise RuntimeError(f"undo of {name} broke")

        return Step(
            name,
            [f"do {name}"],
            run,
            Undo([f"undo {name}"], undo_run, restores_service=restores) if undo else None,
        )


def test_steps_run_in_order_and_report_their_detail():
    target, out = Target(), io.StringIO()
    execute([target.step("a"), target.step("b")], Reporter(stream=out))
    assert target.log == ["run a", "run b"]
    assert "→ a … ok" in out.getvalue() and "b done" in out.getvalue()


def test_a_skipped_step_neither_runs_nor_is_undone():
    target, out = Target(), io.StringIO()
    skipped = target.step("b")
    skipped.skip_when = lambda: "unchanged"
    steps = [target.step("a"), skipped, target.step("c", fails=True)]
    with pytest.raises(Undone) as raised:
        execute(steps, Reporter(stream=out))
    assert target.log == ["run a", "run c", "undo c", "undo a"]
    assert raised.value.done == ["a", "c"]
    assert "→ b … ok" in out.getvalue() and "skipped (unchanged)" in out.getvalue()


def test_a_failure_undoes_every_step_that_began_newest_first():
    target = Target()
    steps = [
        target.step("a"),
        target.step("b", undo=False),
        target.step("c", fails=True),
        target.step("d"),
    ]
    with pytest.raises(Undone) as raised:
        execute(steps, Reporter(stream=io.StringIO()))
    assert target.log == ["run a", "run b", "run c", "undo c", "undo a"]
    assert str(raised.value.error) == "c broke" and not raised.value.restore_failed
    assert raised.value.done == ["a", "b", "c"]


def test_after_a_failed_restore_nothing_is_started_on_top_and_it_is_reported():
    target = Target()
    steps = [
        target.step("lock"),
        target.step("swap", restores=True),
        target.step("start", restores=True, undo_fails=True),
        target.step("health", fails=True),
    ]
    with pytest.raises(Undone) as raised:
        execute(steps, Reporter(stream=io.StringIO()))
    # the swap's undo is skipped (never start over a binary that could not be put back); the
    # lock's undo, which restores nothing, still runs
    assert target.log[-2:] == ["undo start", "undo lock"]
    assert raised.value.restore_failed
    assert raised.value.problems == ["undo start: undo of start broke"]


def test_a_failed_undo_that_restores_nothing_is_only_a_warning():
    target, out = Target(), io.StringIO()
    steps = [target.step("lock", undo_fails=True), target.step("upload", fails=True)]
    with pytest.raises(Undone) as raised:
        execute(steps, Reporter(stream=out))
    assert not raised.value.restore_failed
    assert raised.value.warnings == ["undo lock: undo of lock broke"]
    assert "warning: undo lock" in out.getvalue()


def test_ctrl_c_is_undone_too_and_reconnects_first():
    target = Target()
    seen: list[str] = []

    def interrupted() -> str:
        raise KeyboardInterrupt

    steps = [target.step("lock"), Step("upload", ["send"], interrupted)]
    with pytest.raises(Undone) as raised:
        execute(
            steps,
            Reporter(stream=io.StringIO()),
            before_undo=lambda error: seen.append(type(error).__name__),
        )
    assert isinstance(raised.value.error, KeyboardInterrupt)
    assert seen == ["KeyboardInterrupt"] and target.log[-1] == "undo lock"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_cancel_never_raises_inside_a_step_it_cuts_and_the_step_ends_interrupted(signum):
    """The handler raises nothing where it lands: an exception raised there can land inside
    paramiko between taking a lock and the `try` that gives it back, and the undo's next send
    then waits for that lock forever (a SIGTERM sweep hung so). The cut ends the step's wait;
    whatever the step does then counts as interrupted, and no further step begins."""
    target, out = Target(), io.StringIO()
    cuts: list[str] = []
    lock = threading.Lock()  # as paramiko takes one: acquire(), then the try
    reached: list[str] = []
    before = signal.getsignal(signum)

    def uploading() -> str:
        lock.acquire()
        os.kill(os.getpid(), signum)  # the handler runs at the next instruction, here
        reached.append("after the signal")
        lock.release()
        assert cuts == ["cut"]  # the wait on the socket now fails:
        raise EOFError("connection closed")

    steps = [target.step("lock"), Step("upload", ["send"], uploading), target.step("restart")]
    with pytest.raises(Undone) as raised:
        execute(
            steps,
            Reporter(stream=out),
            interrupts=lambda: interrupts_abort(lambda: cuts.append("cut")),
        )
    assert reached == ["after the signal"] and not lock.locked()
    assert isinstance(raised.value.error, KeyboardInterrupt)
    assert target.log == ["run lock", "undo lock"]  # restart never began
    assert "→ upload … interrupted" in out.getvalue()
    assert signal.getsignal(signum) is before  # the handler is the caller's again


def test_a_cancel_during_a_step_that_still_succeeds_stops_before_the_next():
    target = Target()
    cuts: list[str] = []

    def finishing() -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        return "done on the target all the same"

    steps = [target.step("lock"), Step("finish", ["send"], finishing), target.step("health")]
    with pytest.raises(Undone) as raised:
        execute(
            steps,
            Reporter(stream=io.StringIO()),
            interrupts=lambda: interrupts_abort(lambda: cuts.append("cut")),
        )
    assert isinstance(raised.value.error, KeyboardInterrupt)
    assert raised.value.done == ["lock", "finish"] and target.log == ["run lock", "undo lock"]
    assert cuts == ["cut"]


def test_the_plan_shows_each_command_and_its_undo():
    target = Target()
    steps = [target.step("a"), target.step("b", undo=False)]
    assert plan_lines(steps) == ["a: do a  (undone on failure)", "b: do b"]
    assert plan_lines(steps, verbose=True) == ["a: do a", "    undo on failure: undo a", "b: do b"]
