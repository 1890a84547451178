"""Verification judged on facts: each check fails on what a broken deploy looks like."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest

from gbdeploy.config import Component
from gbdeploy.errors import UsageError, VerificationFailed
from gbdeploy.output import Reporter
from gbdeploy.verify import TargetFacts, commits_match, judge, normalize_commit, verify_until
from gbdeploy_sandbox.clock import FakeClock

COMMIT = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
RUN_START = datetime(2026, 11, 27, 21, 0, tzinfo=timezone.utc)
COMPONENT = Component(
    name="botserver", binary="/opt/gbo/bin/botserver", health="http://localhost:5858/health"
)


def good_facts(**changes) -> TargetFacts:
    facts = {
        "mtime": RUN_START + timedelta(minutes=9),
        "owner": "gbuser",
        "contains_commit": True,
        "processes": [(4242, "gbuser")],
        "health": {"status": "ok", "service": "botserver", "commit": COMMIT[:7]},
    }
    facts.update(changes)
    return TargetFacts(**facts)


def failed_checks(facts: TargetFacts) -> list[str]:
    return [r.check for r in judge(COMPONENT, COMMIT, RUN_START, facts) if not r.ok]


def test_a_good_deploy_passes_every_check():
    results = judge(COMPONENT, COMMIT, RUN_START, good_facts())
    assert [r.check for r in results] == [
        "binary newer than the run",
        "binary contains the commit",
        "binary owner",
        "process runs the binary",
        "health reports the commit",
    ]
    assert all(r.ok for r in results)


@pytest.mark.parametrize(
    ("changes", "check", "saw"),
    [
        ({"mtime": RUN_START - timedelta(seconds=3)}, "binary newer than the run", "older"),
        ({"mtime": None}, "binary", "no file at /opt/gbo/bin/botserver"),
        ({"contains_commit": False}, "binary contains the commit", "'1a2b3c4' not found"),
        ({"owner": "root"}, "binary owner", "owner root (want gbuser)"),
        ({"processes": []}, "process runs the binary", "no process"),
        ({"processes": [(1, "root")]}, "process runs the binary", "also 1 as root"),
        ({"health": None}, "health reports the commit", "did not answer"),
        (
            {"health": {"status": "ok", "commit": "ffffff0"}},
            "health reports the commit",
            "commit ffffff0",
        ),
        (
            {"health": {"status": "degraded", "commit": COMMIT[:7]}},
            "health reports the commit",
            "degraded",
        ),
        (
            {"health": {"status": "ok", "commit": "1a2b"}},
            "health reports the commit",
            "commit 1a2b",
        ),
    ],
)
def test_each_broken_fact_fails_its_check_and_says_what_it_saw(changes, check, saw):
    results = judge(COMPONENT, COMMIT, RUN_START, good_facts(**changes))
    failed = [r for r in results if not r.ok]
    assert [r.check for r in failed] == [check]
    assert saw in failed[0].saw


def test_commit_prefix_matching_needs_seven_digits():
    assert commits_match(COMMIT, COMMIT[:7])
    assert commits_match(COMMIT[:7], COMMIT)
    assert not commits_match(COMMIT, COMMIT[:6])
    assert not commits_match(COMMIT, "1a2b3c5")
    assert normalize_commit(" 1A2B3C4 ") == "1a2b3c4"
    with pytest.raises(UsageError):
        normalize_commit("main")


def test_verification_retries_until_the_service_is_up_then_passes():
    attempts = iter([good_facts(health=None, processes=[]), good_facts(health=None), good_facts()])
    clock = FakeClock()
    out = io.StringIO()
    results = verify_until(
        lambda: next(attempts),
        COMPONENT,
        COMMIT,
        RUN_START,
        timeout=60,
        reporter=Reporter(out),
        clock=clock,
        sleep=clock.sleep,
    )
    assert all(r.ok for r in results)
    assert "pass  health reports the commit: status ok, commit 1a2b3c4" in out.getvalue()


def test_verification_gives_up_after_the_timeout_naming_the_failed_check():
    clock = FakeClock()
    out = io.StringIO()
    with pytest.raises(VerificationFailed) as raised:
        verify_until(
            lambda: good_facts(contains_commit=False),
            COMPONENT,
            COMMIT,
            RUN_START,
            timeout=10,
            reporter=Reporter(out),
            clock=clock,
            sleep=clock.sleep,
        )
    assert raised.value.check == "binary contains the commit"
    assert raised.value.exit_code == 1
    assert "FAIL  binary contains the commit" in out.getvalue()
    assert clock.slept >= 10


def deploy_record(**changes) -> dict:
    record = {
        "action": "deploy",
        "commit": COMMIT,
        "result": "unchanged",
        "time": (RUN_START + timedelta(minutes=8)).isoformat(),
    }
    record.update(changes)
    return record


def test_an_unchanged_binary_confirmed_by_this_runs_deploy_is_fresh():
    # The push run deployed it; the dispatched run found the same bytes and kept them.
    facts = good_facts(mtime=RUN_START - timedelta(minutes=3), last_deploy=deploy_record())
    results = judge(COMPONENT, COMMIT, RUN_START, facts)
    assert all(r.ok for r in results)
    assert "same binary kept" in results[0].saw


@pytest.mark.parametrize(
    "record",
    [
        None,
        deploy_record(time=(RUN_START - timedelta(minutes=3)).isoformat()),  # an older deploy
        deploy_record(commit="ffffff0"),  # of another commit
        deploy_record(result="rolled back"),
        deploy_record(action="rollback"),
        deploy_record(time="not a time"),
    ],
)
def test_an_old_binary_is_not_fresh_without_this_runs_confirmation(record):
    facts = good_facts(mtime=RUN_START - timedelta(minutes=3), last_deploy=record)
    assert failed_checks(facts) == ["binary newer than the run"]


def test_verify_outside_a_repository_says_to_pass_the_commit(tmp_path, monkeypatch, run_gbdeploy):
    (tmp_path / "gbdeploy.yaml").write_text("targets: {system: {ssh: nowhere.invalid}}\n")
    monkeypatch.chdir(tmp_path)

    result = run_gbdeploy("verify", "botserver")

    assert result.code == 2
    assert "not inside a git repository" in result.err
    assert "pass --commit SHA" in result.err and "--root" not in result.err


@pytest.mark.parametrize(
    "since", ["2026-11-27T16:00:00-05:00", "2026-11-27T22:00:00+01:00", "2026-11-27T21:00:00Z"]
)
def test_since_is_read_in_any_zone(since):
    from gbdeploy.verify import parse_since

    assert parse_since(since) == RUN_START
