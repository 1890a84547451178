"""`history`: the deploy log read as it is, newest first, with the entry that runs now marked."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import pytest

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
    assert B[:12] in text and " 3s " in text and "ci@runner" in text
    assert "2 unreadable line(s)" in text
    assert f"runs now: * — commit {COMMIT_B[:10]}" in text
    assert max(len(row) for row in lines) <= 120


def test_limit_shows_the_newest_and_says_how_many_are_older():
    built = history.build_history("botserver", "t", SAMPLE, A)
    lines = history.format_history(built, limit=2)
    assert sum("2026-11-28" in row for row in lines) == 2
    assert any("2 older" in row for row in lines)
    running = history.format_history(history.build_history("botserver", "t", SAMPLE, B), limit=2)
    assert "the 3rd newest entry (beyond --limit)" in running[-1]


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


def test_the_sha256_kept_beside_the_binary_is_used_only_while_the_binary_is_as_kept(
    sshd, remote_root, service_user
):
    settings, binary = settings_for(sshd, remote_root, service_user)
    binary.write_bytes(b"\x7fELF one")
    sidecar = Path(f"{binary}.sha256")
    kept = binary.stat()  # as the deploy keeps it: SHA SIZE MTIME INODE
    sidecar.write_text(f"{B} {kept.st_size} {int(kept.st_mtime)} {kept.st_ino}\n")
    Path(f"{binary}.deploys.log").write_text(line(commit=COMMIT_B, sha256=B) + "\n")
    component = settings.components["botserver"]
    assert history.read_history(settings, component).running_sha256 == B

    # The binary replaced by hand since (another mtime): the sidecar is not believed.
    os.utime(binary, (kept.st_atime + 100, kept.st_mtime + 100))
    actual = hashlib.sha256(binary.read_bytes()).hexdigest()
    assert history.read_history(settings, component).running_sha256 == actual


def test_no_log_and_no_binary_is_an_empty_history_not_an_error(sshd, remote_root, service_user):
    settings, _binary = settings_for(sshd, remote_root, service_user)
    built = history.read_history(settings, settings.components["botserver"])
    assert built.entries == [] and built.running_sha256 is None


# --- real deploys, then history, rollback and logs through the command line --------------------
def _world_config(tmp_path: Path, sshd, root: Path, user: str, port: int) -> Path:
    binary, log = root / "opt/gbo/bin/botserver", root / "opt/gbo/logs/error.log"
    binary.parent.mkdir(parents=True)
    log.parent.mkdir(parents=True)
    path = tmp_path / "gbdeploy.yaml"
    path.write_text(
        "forge: {url: 'http://127.0.0.1:9'}\n"
        f"ssh: {{config: '{sshd.ssh_config}'}}\n"
        f"targets: {{system: {{ssh: {sshd.alias}}}}}\n"
        "components:\n"
        "  botui: {enabled: false}\n"
        "  botserver:\n"
        f"    binary: '{binary}'\n"
        f"    log: '{log}'\n"
        f"    user: {user}\n"
        "    start: ./botserver --noconsole\n"
        "    run_as: 'runuser -u {user} --'\n"
        f"    health: 'http://localhost:{port}/health'\n"
        f"    env: {{PORT: '{port}'}}\n"
        "    stop_timeout: 5\n"
        "    health_timeout: 30\n"
    )
    return path


@pytest.mark.slow
def test_three_deploys_are_listed_newest_first_and_a_rollback_is_marked_as_running(
    sshd, remote_root, service_user, tmp_path, gbdeploy_env, run_gbdeploy, monkeypatch
):
    from gbdeploy_sandbox.procs import kill_pids, pids_under
    from gbdeploy_sandbox.service import build_service
    from gbdeploy_sandbox.sshd import free_port

    config = _world_config(tmp_path, sshd, remote_root, service_user, free_port())
    monkeypatch.chdir(tmp_path)
    commits = ["1" * 10, "2" * 10, "3" * 10]
    builds = [build_service(tmp_path / c / "botserver", c) for c in commits]
    try:
        for commit, build in zip(commits, builds, strict=True):
            result = run_gbdeploy(
                "deploy", "botserver", "--artifact", str(build), "--commit", commit, "--yes"
            )
            assert result.code == 0, result.text

        listed = run_gbdeploy("history", "botserver", "--json")
        assert listed.code == 0, listed.text
        entries = json.loads(listed.out)["entries"]
        assert [e["commit"] for e in entries] == commits[::-1]
        assert [e["current"] for e in entries] == [True, False, False]
        assert {e["result"] for e in entries} == {"ok"}

        assert run_gbdeploy("rollback", "botserver", "--yes").code == 0
        table = run_gbdeploy("history", "botserver", "--limit", "2")
        assert table.code == 0, table.text
        rows = [line for line in table.out.splitlines() if re.search(r"\d{4}-\d\d-\d\d ", line)]
        assert len(rows) == 2, table.out
        assert rows[0].lstrip().startswith("*") and "rollback" in rows[0], table.out
        second = hashlib.sha256(builds[1].read_bytes()).hexdigest()
        assert f"sha256 {second[:12]}" in table.out.splitlines()[-1]

        tail = run_gbdeploy("logs", "botserver", "-n", "3")  # one line per start of the service
        assert tail.code == 0, tail.text
        log_lines = (remote_root / "opt/gbo/logs/error.log").read_text().splitlines()
        assert len(log_lines) > 3 and tail.out.splitlines() == log_lines[-3:]
        assert commits[1] in log_lines[-1]  # the rollback started the second build again
    finally:
        kill_pids(pids_under(remote_root))
    assert config.exists()


@pytest.mark.parametrize(
    ("recorded", "shown"),
    [(3, "3s"), (59.6, "1m 00s"), (185, "3m 05s"), (3725, "1h 02m"), (-4, "?"), ("x", "?")],
)
def test_durations_are_shown_in_units_a_person_reads(recorded, shown):
    assert history.seconds(recorded) == shown


def test_the_person_who_released_and_the_ci_run_are_shown_and_in_the_json():
    released = line(
        commit=COMMIT_A,
        sha256=A,
        released_by={"git": "Ana Lima <ana@example.org>", "forge_user": "ana"},
        ci_run={"id": 117, "number": 12, "url": "http://forge/GeneralBots/gb/actions/runs/12"},
    )
    built = history.build_history("botserver", "t", released + "\n" + line(sha256=B), A)
    text = "\n".join(history.format_history(built))
    row = next(r for r in text.splitlines() if COMMIT_A[:10] in r and "*" in r)
    assert "#12" in row and "Ana Lima <ana@example.org> (forge: ana)" in row
    assert "#12 http://forge/GeneralBots/gb/actions/runs/12" in text
    newest, first = built.as_json()["entries"]
    assert first["released_by"]["forge_user"] == "ana" and first["ci_run"]["id"] == 117
    assert "released_by" not in newest  # by hand: the account that ran it, as before


def test_a_switch_shows_the_port_it_left_live():
    text = "\n".join(
        [
            line(commit=COMMIT_A, sha256=A, strategy="switch", switch={"live": 5868}),
            line(commit=COMMIT_B, sha256=B, strategy="switch", switch={"live": 5858}),
        ]
    )
    rows = history.format_history(history.build_history("botserver", "t", text, B))
    assert "switch :5858" in rows[2] and "switch :5868" in rows[3]
