"""What the user reads: the Reporter's masking, colour, quiet/verbose, steps and plans."""

from __future__ import annotations

import io

import pytest

from gbdeploy.output import Reporter, table

TOKEN = "tok-3f9c2e7a1b5d"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_reporter_masks_the_token_in_everything_it_prints():
    out = io.StringIO()
    reporter = Reporter(stream=out, secrets=(TOKEN,), color=False)
    reporter.say(f"GET /api?token={TOKEN}")
    reporter.info(f"info {TOKEN}")
    reporter.write(f"raw {TOKEN}\n")
    reporter.plan(f"plan {TOKEN}", [f"curl -H 'Authorization: token {TOKEN}'"])
    with reporter.step(f"step {TOKEN}") as record:
        record.detail = f"detail {TOKEN}"
    with pytest.raises(RuntimeError), reporter.step(f"failing {TOKEN}"):
        raise RuntimeError
    reporter.summary()
    text = out.getvalue()
    assert TOKEN not in text
    assert text.count("***") >= 9  # every place it was said, masked


def test_colour_on_a_terminal_makes_ok_and_failed_stand_apart(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Terminal()
    reporter = Reporter(stream=out)
    with reporter.step("good"):
        pass
    with pytest.raises(RuntimeError), reporter.step("bad"):
        raise RuntimeError
    text = out.getvalue()
    assert "\x1b[32mok\x1b[0m" in text
    assert "\x1b[31mFAILED\x1b[0m" in text


@pytest.mark.parametrize("setting", ["no_color", "pipe"])
def test_no_colour_with_no_color_or_off_a_terminal(monkeypatch, setting):
    monkeypatch.setenv("TERM", "xterm")
    if setting == "no_color":
        monkeypatch.setenv("NO_COLOR", "1")
        out: io.StringIO = Terminal()
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
        out = io.StringIO()
    reporter = Reporter(stream=out)
    with reporter.step("good"):
        pass
    assert "\x1b[" not in out.getvalue()
    assert "ok (" in out.getvalue()


def test_ctrl_c_shows_the_step_as_interrupted_not_failed():
    out = io.StringIO()
    reporter = Reporter(stream=out, color=False)
    with pytest.raises(KeyboardInterrupt), reporter.step("wait for run 101"):
        raise KeyboardInterrupt
    reporter.summary()
    text = out.getvalue()
    assert "FAIL" not in text
    assert "→ wait for run 101 … interrupted" in text
    assert "INT  wait for run 101" in text


def test_a_step_with_lines_under_it_is_named_once_plus_the_summary():
    out = io.StringIO()
    reporter = Reporter(stream=out, color=False)
    with reporter.step("find the CI run of abc") as record:
        reporter.say("waiting for the push run to appear …")
        record.detail = "run 101"
    reporter.summary()
    text = out.getvalue()
    assert text.count("find the CI run of abc") == 2  # the header and the summary
    assert "  ↳ ok (" in text and "run 101" in text


def test_quiet_hides_progress_but_never_a_failure_or_a_result():
    out = io.StringIO()
    reporter = Reporter(stream=out, verbosity=-1, color=False)
    reporter.info("progress")
    with reporter.step("quiet step"):
        reporter.say("waiting for the run …")
    with pytest.raises(RuntimeError), reporter.step("broken step"):
        reporter.say("pass  binary owner")
        with reporter.step("inner"):
            pass
        reporter.say("FAIL  health: connection refused")
        raise RuntimeError
    with pytest.raises(RuntimeError), reporter.step("silent failure"):
        raise RuntimeError
    reporter.say("the result")
    reporter.summary()
    assert out.getvalue() == (
        "→ broken step …\n"
        "  pass  binary owner\n"
        "  FAIL  health: connection refused\n"
        "  ↳ FAILED (0.00s)\n"
        "→ silent failure … FAILED (0.00s)\n"
        "the result\n"
    )


def test_verbose_adds_details_and_brief_plans_hide_scripts_without_it():
    script = "stop: set -e\n    kill -TERM 123\n    sleep 1"
    for verbosity, expect_script in ((0, False), (1, True)):
        out = io.StringIO()
        reporter = Reporter(stream=out, verbosity=verbosity)
        reporter.detail("a detail")
        reporter.plan("deploy", ["lock: mkdir x", script], brief=True)
        text = out.getvalue()
        assert ("a detail" in text) is expect_script
        assert ("kill -TERM 123" in text) is expect_script
        assert "stop: set -e" in text and "lock: mkdir x" in text
        assert ("-v shows every command" in text) is not expect_script
    out = io.StringIO()
    Reporter(stream=out).plan("git", [script])  # not brief: every line, as before
    assert "kill -TERM 123" in out.getvalue()


def test_table_aligns_columns():
    assert table([["a", "bb", "c"], ["ccc", "d", "e"]], header=["h1", "h2", "h3"]) == [
        "h1   h2  h3",
        "a    bb  c",
        "ccc  d   e",
    ]


def test_a_reader_that_went_away_does_not_stop_the_operation():
    class ClosedPipe(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            ClosedPipe.writes += 1
            raise BrokenPipeError

    reporter = Reporter(stream=ClosedPipe(), color=False)
    finished = []
    with reporter.step("swap the binary"):  # e.g. `gbdeploy deploy … | head -1`
        reporter.say("moving")
        finished.append(True)
    reporter.summary()
    assert finished == [True]
    assert ClosedPipe.writes == 1  # tried once, then stopped writing


def test_shared_lines_are_shown_in_full_once_then_named():
    out = io.StringIO()
    reporter = Reporter(stream=out, verbosity=1, color=False)
    reporter.shared = "A=1\nf() { :; }"
    reporter.plan(
        "plan",
        [
            "lock: A=1\n    f() { :; }\n    mkdir L",
            "    undo: A=1\n        f() { :; }\n        rm L",
        ],
    )
    reporter.remote_commands(["A=1\nf() { :; }\nrun"])
    text = out.getvalue()
    assert text.count("f() { :; }") == 1 and "mkdir L" in text and "rm L" in text
    assert "    undo: [the 2 shared lines shown in full above]" in text
    assert "$ [the 2 shared lines shown in full above]\n  run" in text


def test_each_shared_block_is_shown_in_full_once_wherever_it_recurs():
    out = io.StringIO()
    reporter = Reporter(stream=out, verbosity=1, color=False)
    reporter.shared, reporter.more_shared = "A=1\nf() { :; }", ["g() { :; }\nh() { :; }"]
    check = "A=1\nf() { :; }\n( g() { :; }\nh() { :; }\ng\n)"
    reporter.remote_commands([check, check])
    text = out.getvalue()
    assert text.count("f() { :; }") == 1 and text.count("h() { :; }") == 1
    assert "( [the 2 shared lines shown in full above]" in text and text.count("\n  g\n") == 2
