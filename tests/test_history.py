"""`history`: the deploy log read as it is, newest first, with the entry that runs now marked."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from gbdeploy import history
from gbdeploy.output import Reporter
from gbdeploy_sandbox.settings import standin_component, target_settings

A, B, C = "a" * 64, "b" * 64, "c" * 64
COMMIT_A, COMMIT_B, COMMIT_C = "1111111aaaa" + "0" * 29, "2222222bbbb" + "0" * 29, "3" * 40


def line(**fields: object) -> str:
    base = {
        "time": "2026-11-28T09:00:00+00:00",
        "component": "botserver",
        "action": "deploy",
        "strategy": "staged",
        "result": "ok",
        "duration": 3.25,
        "who": "ci@runner",
    }
    return json.dumps({**base, **fields}, sort_keys=True)


SAMPLE = "\n".join(
    [
        line(time="2026-11-28T09:00:00+00:00", commit=COMMIT_A, sha256=A),
        "this is not json",
        line(time="2026-11-28T10:00:00+00:00", commit=COMMIT_B, sha256=B, release_id=7),
        "[1, 2]",
        "",
        line(time="2026-11-28T11:00:00+00:00", commit=COMMIT_C, sha256=C, result="failed"),
        line(time="2026-11-28T12:00:00+01:00", action="rollback", commit=COMMIT_A, sha256=A),
    ]
)


def test_entries_come_newest_first_and_bad_lines_are_counted_not_fatal():
    entries, unreadable = history.parse_log(SAMPLE)
    assert [e.get("commit") for e in entries] == [COMMIT_A, COMMIT_C, COMMIT_B, COMMIT_A]
    assert [e.get("action") for e in entries] == ["rollback", "deploy", "deploy", "deploy"]
    assert unreadable == 2
    assert entries[2].get("release_id") == 7  # unknown keys are kept


def test_the_running_binary_is_the_newest_successful_entry_with_its_sha256():
    # The failed deploy of C was rolled back: A runs, put there by the rollback (entry 0).
    built = history.build_history("botserver", "t", SAMPLE, A)
    assert built.current == 0
    assert history.build_history("botserver", "t", SAMPLE, B).current == 2
    assert history.build_history("botserver", "t", SAMPLE, C).current is None  # failed: not it
    assert history.build_history("botserver", "t", SAMPLE, None).current is None


def test_the_table_shows_short_shas_utc_times_and_marks_what_runs():
    built = history.build_history("botserver", "root@host", SAMPLE, B)
    lines = history.format_history(built)
    text = "\n".join(lines)
    assert lines[0] == "botserver on root@host: deploys and rollbacks, newest first"
    rows = [row for row in lines if "2026-11-28" in row]
    assert len(rows) == 4
    assert rows[0].split()[:4] == ["2026-11-28", "11:00:00Z", "rollback", COMMIT_A[:10]]
    assert rows[2].lstrip().startswith("*")  # B's deploy runs now
    assert not any(row.lstrip().startswith("*") for i, row in enumerate(rows) if i != 2)
    assert COMMIT_B not in text and B not in text  # short forms only
    assert B[:12] in text and "3.2s" in text and "ci@runner" in text
    assert "2 unreadable line(s)" in text
    assert f"runs now: * — commit {COMMIT_B[:10]}" in text
    assert max(len(row) for row in lines) <= 120


def test_limit_shows_the_newest_and_says_how_many_are_older():
    built = history.build_history("botserver", "t", SAMPLE, A)
    lines = history.format_history(built, limit=2)
    assert sum("2026-11-28" in row for row in lines) == 2
    assert any("2 older" in row for row in lines)


def test_a_binary_no_deploy_recorded_is_said_so():
    built = history.build_history("botserver", "t", SAMPLE, "d" * 64)
    assert "which no successful deploy here recorded" in history.format_history(built)[-1]
    empty = history.build_history("botserver", "t", "", None)
    assert "(no deploy recorded yet)" in "\n".join(history.format_history(empty))
    assert "no binary on the target" in history.format_history(empty)[-1]


def test_json_keeps_every_key_and_marks_the_current_one():
    built = history.build_history("botserver", "t", SAMPLE, B)
    data = json.loads(json.dumps(built.as_json(limit=3)))
    assert [e["current"] for e in data["entries"]] == [False, False, True]
    assert data["entries"][2]["release_id"] == 7
    assert data["running_sha256"] == B and data["unreadable_lines"] == 2


def test_times_in_any_zone_are_shown_in_utc_and_odd_values_as_they_are():
    assert history.when("2026-11-28T12:00:00+01:00") == "2026-11-28 11:00:00Z"
    assert history.when("2026-11-28T11:00:00Z") == "2026-11-28 11:00:00Z"
    assert history.when("yesterday") == "yesterday"
    assert history.when(None) == "?"


# --- over the real sshd -------------------------------------------------------------------------
def settings_for(sshd, remote_root: Path, service_user: str):
    binary = remote_root / "opt" / "botserver"
    binary.parent.mkdir(parents=True)
    component = standin_component(binary, remote_root / "botserver.log", service_user, 1)
    return target_settings(sshd, component), binary


def test_history_reads_the_targets_log_and_hashes_the_running_binary(
    sshd, remote_root, service_user
):
    settings, binary = settings_for(sshd, remote_root, service_user)
    binary.write_bytes(b"\x7fELF the second build")
    running = hashlib.sha256(binary.read_bytes()).hexdigest()
    Path(f"{binary}.deploys.log").write_text(
        line(commit=COMMIT_A, sha256=A) + "\n" + line(commit=COMMIT_B, sha256=running) + "\n"
    )
    out = io.StringIO()

    history.run_history(settings, Reporter(stream=out), "botserver")

    text = out.getvalue()
    assert f"runs now: * — commit {COMMIT_B[:10]}, sha256 {running[:12]}" in text
    out = io.StringIO()
    history.run_history(settings, Reporter(stream=out), "botserver", as_json=True)
    data = json.loads(out.getvalue())
    assert [e["commit"] for e in data["entries"]] == [COMMIT_B, COMMIT_A]
    assert data["entries"][0]["current"] is True


def test_the_sha256_kept_beside_the_binary_is_used_unless_it_is_older(
    sshd, remote_root, service_user
):
    settings, binary = settings_for(sshd, remote_root, service_user)
    binary.write_bytes(b"\x7fELF one")
    sidecar = Path(f"{binary}.sha256")
    sidecar.write_text(f"{B}  {binary}\n")
    Path(f"{binary}.deploys.log").write_text(line(commit=COMMIT_B, sha256=B) + "\n")
    component = settings.components["botserver"]
    assert history.read_history(settings, component).running_sha256 == B

    # A binary newer than its sidecar (replaced by hand): the sidecar is not believed.
    stat = sidecar.stat()
    os.utime(sidecar, (stat.st_atime - 100, stat.st_mtime - 100))
    actual = hashlib.sha256(binary.read_bytes()).hexdigest()
    assert history.read_history(settings, component).running_sha256 == actual


def test_no_log_and_no_binary_is_an_empty_history_not_an_error(sshd, remote_root, service_user):
    settings, _binary = settings_for(sshd, remote_root, service_user)
    built = history.read_history(settings, settings.components["botserver"])
    assert built.entries == [] and built.running_sha256 is None
