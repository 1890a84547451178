"""The proxy side of a switch over the real sshd against a real Caddy (Debian's 2.6) on loopback,
in front of two stand-in services (old commit on one port, new on the other) under steady load:
traffic moves with 0 failed requests, Caddy's pid stays (reload, not restart), the Caddyfile
changes only in that upstream, has a backup, and every failure leaves traffic where it was."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gbdeploy.caddy_switch import CaddySwitch, ProxySwitchFailed
from gbdeploy.config import SshSettings, Target
from gbdeploy.remote.connection import Remote
from gbdeploy_sandbox.load import Load
from gbdeploy_sandbox.procs import kill_pids, wait_for
from gbdeploy_sandbox.proxy import LoopbackCaddy
from gbdeploy_sandbox.sshd import LoopbackSshd, free_port
from tests.deploy_world import NEW, OLD, Artifacts


@dataclass
class Proxied:
    caddy: LoopbackCaddy
    remote: Remote
    old_port: int
    new_port: int

    def switch(self, old: int | None = None, new: int | None = None) -> CaddySwitch:
        return CaddySwitch(
            str(self.caddy.caddyfile),
            "127.0.0.1",
            self.old_port if old is None else old,
            self.new_port if new is None else new,
        )

    def commit_through_caddy(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.caddy.url}/health", timeout=10) as answer:
                return json.loads(answer.read())["commit"]
        except OSError:
            return None

    def load(self) -> Load:
        return Load(f"{self.caddy.url}/health", clients=6, max_seconds=120)


def start_service(binary: Path, port: int, directory: Path) -> int:
    with open(directory / f"service-{port}.log", "ab") as log:
        process = subprocess.Popen(
            [str(binary)],
            env={**os.environ, "PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    return process.pid


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def proxied(sshd: LoopbackSshd, artifacts: Artifacts, tmp_path: Path) -> Iterator[Proxied]:
    old_port, new_port = free_port(), free_port()
    pids = [
        start_service(artifacts(OLD), old_port, tmp_path),
        start_service(artifacts(NEW), new_port, tmp_path),
    ]
    assert wait_for(lambda: answers(old_port) and answers(new_port))
    caddy = LoopbackCaddy(tmp_path / "proxy", upstream_port=old_port).start()
    remote = Remote(Target("proxy", sshd.alias), SshSettings(config=str(sshd.ssh_config)))
    try:
        yield Proxied(caddy, remote, old_port, new_port)
    finally:
        remote.close()
        caddy.stop()
        kill_pids(pids)


def other_site(text: str) -> str:
    return text[text.index("# another site") :]


def test_a_switch_and_back_moves_traffic_with_no_failed_request(proxied: Proxied):
    caddy = proxied.caddy
    original = caddy.caddyfile.read_bytes()
    pid = caddy.pid
    inode = caddy.caddyfile.stat().st_ino
    assert proxied.commit_through_caddy() == OLD

    with proxied.load() as load:
        assert load.wait_for_requests(50)
        there = proxied.switch()
        there.apply(proxied.remote)
        assert caddy.caddyfile.stat().st_ino != inode  # renamed in whole, never written in place
        assert wait_for(lambda: proxied.commit_through_caddy() == NEW)
        assert load.wait_for_requests(50)
        back = proxied.switch(proxied.new_port, proxied.old_port)
        back.apply(proxied.remote)
        assert wait_for(lambda: proxied.commit_through_caddy() == OLD)
        assert load.wait_for_requests(50)

    assert load.result.failed == 0, load.result.summary()
    assert load.result.commits[NEW] > 0 and load.result.commits[OLD] > 0
    assert caddy.running() and caddy.pid == pid  # reloaded, never restarted
    # back where it started, byte for byte; each switch left the file it changed as a backup
    assert caddy.caddyfile.read_bytes() == original
    assert there.backup_path is not None and back.backup_path is not None
    assert Path(there.backup_path).read_bytes() == original
    assert Path(there.backup_path).name == f"config.bak-{there.stamp}"
    middle = Path(back.backup_path).read_text()
    assert f"reverse_proxy 127.0.0.1:{proxied.new_port}\n" in middle
    assert other_site(middle) == other_site(original.decode())
    assert not list(caddy.caddyfile.parent.glob(".config.gbdeploy-new"))


def test_an_existing_backup_of_that_minute_is_never_overwritten(proxied: Proxied):
    switch = proxied.switch()
    earlier = proxied.caddy.caddyfile.with_name(f"config.bak-{switch.stamp}")
    earlier.write_text("an older backup, by hand\n")
    switch.apply(proxied.remote)

    assert earlier.read_text() == "an older backup, by hand\n"
    assert switch.backup_path == f"{earlier}-2"
    assert "reverse_proxy 127.0.0.1:" in Path(switch.backup_path).read_text()


def test_a_caddyfile_that_fails_validation_is_never_put_in_place(proxied: Proxied):
    """Someone edited the file by hand without reloading, and broke it: the switch's validate
    refuses it, the live file stays as it was, and Caddy keeps serving the old port."""
    caddy = proxied.caddy
    broken = caddy.caddyfile.read_text() + "\nhttp://127.0.0.1:9 {\n\tno_such_directive\n}\n"
    caddy.caddyfile.write_text(broken)
    pid, inode = caddy.pid, caddy.caddyfile.stat().st_ino

    with proxied.load() as load:
        assert load.wait_for_requests(30)
        with pytest.raises(
            ProxySwitchFailed, match=r"write the new Caddyfile failed: .*no_such_dir"
        ) as failed:
            proxied.switch().apply(proxied.remote)
        assert load.wait_for_requests(30)

    assert failed.value.restored and failed.value.dials_new is False
    assert caddy.caddyfile.read_text() == broken
    assert caddy.caddyfile.stat().st_ino == inode  # never replaced, not even for a moment
    assert proxied.commit_through_caddy() == OLD
    assert load.result.failed == 0, load.result.summary()
    assert caddy.pid == pid
    assert not list(caddy.caddyfile.parent.glob(".config.gbdeploy-new"))


def test_a_failed_reload_puts_the_backup_back_and_traffic_stays(proxied: Proxied):
    """The file names an admin address this Caddy does not listen on (edited, never reloaded):
    validate passes, reload cannot reach Caddy. The file goes back as it was."""
    caddy = proxied.caddy
    elsewhere = caddy.caddyfile.read_text().replace(
        f"admin 127.0.0.1:{caddy.admin_port}", f"admin 127.0.0.1:{free_port()}"
    )
    caddy.caddyfile.write_text(elsewhere)

    with proxied.load() as load:
        assert load.wait_for_requests(30)
        with pytest.raises(ProxySwitchFailed, match="caddy reload failed") as failed:
            proxied.switch().apply(proxied.remote)
        assert load.wait_for_requests(30)

    assert failed.value.restored
    assert "is back as it was" in str(failed.value)
    # the file names an admin API this Caddy is not on: which config runs is not known, so the
    # caller must not stop the new process on the strength of this
    assert failed.value.dials_new is None
    assert "its admin API does not say which config Caddy runs" in str(failed.value)
    assert caddy.caddyfile.read_text() == elsewhere
    assert proxied.commit_through_caddy() == OLD
    assert load.result.failed == 0, load.result.summary()


def test_undo_puts_the_old_upstream_back_through_a_reload(proxied: Proxied):
    """What a deploy does when the check through Caddy fails after the switch."""
    original = proxied.caddy.caddyfile.read_bytes()
    pid = proxied.caddy.pid
    switch = proxied.switch()
    switch.apply(proxied.remote)
    assert wait_for(lambda: proxied.commit_through_caddy() == NEW)

    with proxied.load() as load:
        assert load.wait_for_requests(30)
        switch.undo(proxied.remote)
        assert load.wait_for_requests(30)

    assert proxied.caddy.caddyfile.read_bytes() == original
    assert proxied.commit_through_caddy() == OLD
    assert load.result.failed == 0, load.result.summary()
    assert proxied.caddy.pid == pid


def test_a_file_changed_since_it_was_read_is_left_alone(proxied: Proxied):
    switch = proxied.switch()
    read = switch.current_text(proxied.remote)
    changed = read.replace("# another site", "# another site, edited meanwhile")
    proxied.caddy.caddyfile.write_text(changed)

    with pytest.raises(ProxySwitchFailed, match="changed since it was read"):
        switch.apply(proxied.remote, read)
    assert proxied.caddy.caddyfile.read_text() == changed
    assert proxied.commit_through_caddy() == OLD


def test_a_file_edited_after_the_backup_is_not_overwritten(proxied: Proxied, monkeypatch):
    """Someone edits the Caddyfile while the switch is between its backup and its write."""
    switch = proxied.switch()
    read = switch.current_text(proxied.remote)
    edited = read.replace("# another site", "# another site, edited meanwhile")
    backup = next(op for op in switch.operations(read) if op.name == "back up the Caddyfile")
    run = proxied.remote.run

    def edited_after_the_backup(command: str, **options):
        result = run(command, **options)
        if command == backup.command:
            proxied.caddy.caddyfile.write_text(edited)
        return result

    monkeypatch.setattr(proxied.remote, "run", edited_after_the_backup)

    with pytest.raises(ProxySwitchFailed, match="changed since it was read"):
        switch.apply(proxied.remote, read)
    assert proxied.caddy.caddyfile.read_text() == edited
    assert proxied.commit_through_caddy() == OLD


def test_the_plan_is_the_exact_commands_and_changes_nothing(proxied: Proxied):
    before = proxied.caddy.caddyfile.read_bytes()
    path = str(proxied.caddy.caddyfile)
    switch = proxied.switch()
    operations = list(switch.operations(before.decode()))

    assert len(switch.stamp) == len("YYYYmmddHHMM") and switch.stamp.isdigit()
    assert [op.name for op in operations] == [
        "back up the Caddyfile",
        "write the new Caddyfile",
        "reload Caddy",
    ]
    assert operations[0].plan_line().endswith(f"cp -p {path} {path}.bak-{switch.stamp}")
    write = operations[1].command  # proxy.sh's caddy_write, validating with `caddy`
    assert f"\ncaddy_write {path} " in write and write.endswith(" caddy")
    assert operations[2].command == f"caddy reload --adapter caddyfile --config {path}"
    assert "restart" not in " ".join(op.command for op in operations)
    assert proxied.caddy.caddyfile.read_bytes() == before
    assert not list(proxied.caddy.caddyfile.parent.glob("config.bak-*"))


def test_confirm_reads_from_caddys_admin_api_that_the_reload_took(proxied: Proxied):
    switch = proxied.switch()
    list(switch.operations(switch.current_text(proxied.remote)))
    with pytest.raises(ProxySwitchFailed, match="the reload did not take"):
        switch.confirm(proxied.remote)  # written nowhere yet: Caddy still dials the old port
    switch.apply(proxied.remote)
    switch.confirm(proxied.remote)
    assert proxied.commit_through_caddy() == NEW


def test_admin_address_follows_the_global_option():
    from gbdeploy.caddyfile import admin_address

    assert admin_address("x.example.com {\n\trespond ok\n}\n") == "localhost:2019"
    assert admin_address("{\n\tadmin 127.0.0.1:2999\n}\n") == "127.0.0.1:2999"
    assert admin_address("{\n\tadmin :2999\n}\n") == "localhost:2999"
    assert admin_address("{\n\tadmin off\n}\n") is None
    assert admin_address("{\n\tadmin unix//run/caddy.sock\n}\n") is None
