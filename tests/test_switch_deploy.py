"""`deploy --strategy switch` end to end over the real sshd, in front of Debian's real Caddy, under
steady load through Caddy (issue 22's "Done when"): two switches there and back fail no request,
the old process is gone after each, the Caddyfile keeps every other site byte for byte and has a
backup, Caddy is reloaded not restarted; every failure (unhealthy binary, validate, reload,
confirm) leaves Caddy and the old service as they were, with no failed request; a deploy killed
mid-switch is finished by `--recover` with one healthy process behind Caddy."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gbdeploy import deploy
from gbdeploy.config import Settings, Switch, Target
from gbdeploy.deploy.status import format_status, gather_status
from gbdeploy.errors import DeployFailed, PreflightError
from gbdeploy.output import Reporter
from gbdeploy.service_control import run_service
from gbdeploy.verify import verify_deployed
from gbdeploy_sandbox.load import Load
from gbdeploy_sandbox.procs import pids_running, wait_for
from gbdeploy_sandbox.proxy import LoopbackCaddy
from gbdeploy_sandbox.service import Fault
from gbdeploy_sandbox.sshd import free_port
from tests.deploy_world import NEW, OLD, Artifacts, World, cli_env, deployed

pytestmark = pytest.mark.slow

THIRD = "ccccccc3333"
BOTH = Path(__file__).resolve().parents[1]


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


@dataclasses.dataclass
class SwitchWorld:
    world: World
    caddy: LoopbackCaddy
    ports: tuple[int, int]
    caddy_command: str = "caddy"
    health_timeout: float = 30.0  # a bound on a poll: generous for a loaded machine
    caddyfile: Path | None = None  # default: the Caddy's own
    site: str | None = None
    site_ca: str | None = None

    def settings(self) -> Settings:
        base = self.world.settings(
            env={},
            health_timeout=self.health_timeout,
            health="http://localhost:{port}/health",
            switch=Switch(
                ports=list(self.ports),
                proxy="proxy",
                upstream_host="127.0.0.1",
                caddyfile=str(self.caddyfile or self.caddy.caddyfile),
                drain=10.0,
                caddy=self.caddy_command,
                site=self.site,
                site_ca=self.site_ca,
            ),
        )
        proxy = Target("proxy", self.world.sshd.alias)
        return dataclasses.replace(base, targets={**base.targets, "proxy": proxy})

    def deploy(self, commit: str, artifact: Path, **options) -> str:
        out = io.StringIO()
        deploy.run_deploy(
            self.settings(),
            "botserver",
            Reporter(stream=out),
            artifact=str(artifact),
            commit=commit,
            strategy=options.pop("strategy", "switch"),
            **options,
        )
        return out.getvalue()

    def through_caddy(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.caddy.url}/health", timeout=5) as answer:
                return json.loads(answer.read())["commit"]
        except OSError:
            return None

    def backups(self) -> list[Path]:
        return sorted(self.caddy.caddyfile.parent.glob("config.bak-*"))

    def failing_caddy(self, operation: str) -> None:
        """`switch.caddy` becomes a wrapper of the real caddy whose `OPERATION` fails (`validate`)
        or does nothing (`reload-ignored`), or fails only on its first run (`reload`), or takes
        and then hangs, failing every later run (`reload-then-hang`)."""
        wrapper = self.world.root / "caddy-wrapper"
        real = subprocess.run(["which", "caddy"], capture_output=True, text=True).stdout.strip()
        once = self.world.root / "caddy-wrapper.failed-once"
        body = {
            "validate": '[ "$1" = validate ] && '
            '{ echo "Error: adapting config: bad" >&2; exit 1; }',
            "reload": f'[ "$1" = reload ] && [ ! -e {once} ] && {{ : > {once}; '
            'echo "Error: sending configuration to instance: refused" >&2; exit 1; }',
            "reload-ignored": '[ "$1" = reload ] && exit 0',
            # the first reload takes, then hangs (the deploy is interrupted there); later fail
            "reload-then-hang": f'if [ "$1" = reload ]; then [ -e {once} ] && '
            '{ echo "Error: sending configuration to instance: refused" >&2; exit 1; }; '
            f'{real} "$@" || exit 1; : > {once}; i=0; '
            'while [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; exit 0; fi',
        }[operation]
        wrapper.write_text(f'#!/bin/sh\n{body}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
        self.caddy_command = str(wrapper)


@pytest.fixture
def switch_world(world: World, artifacts: Artifacts) -> Iterator[SwitchWorld]:
    first, second = world.port, free_port()
    caddy = LoopbackCaddy(world.root / "proxy", upstream_port=first)
    deployed(world, artifacts, OLD)
    caddy.start()
    try:
        yield SwitchWorld(world, caddy, (first, second))
    finally:
        caddy.stop()


def under_load(made: SwitchWorld):
    return Load(f"{made.caddy.url}/health", clients=6, max_seconds=120)


def test_two_switches_there_and_back_under_load_fail_no_request(
    switch_world: SwitchWorld, artifacts: Artifacts
):
    made = switch_world
    original = made.caddy.caddyfile.read_text()
    other_sites = original[original.index("# another site") :]
    caddy_pid = made.caddy.pid
    first, second = made.ports

    with under_load(made) as load:
        assert load.wait_for_requests(50)
        made.deploy(NEW, artifacts(NEW))
        assert made.through_caddy() == NEW
        assert (health(second) or {}).get("commit") == NEW
        assert len(pids_running(made.world.binary)) == 1  # the old process is gone
        assert health(first) is None
        assert load.wait_for_requests(50)
        made.deploy(THIRD, artifacts(THIRD))
        assert made.through_caddy() == THIRD
        assert len(pids_running(made.world.binary)) == 1
        assert (health(first) or {}).get("commit") == THIRD
        assert load.wait_for_requests(50)
        # rollback goes the same way: the kept release beside, on the idle port, then Caddy
        deploy.run_rollback(made.settings(), "botserver", Reporter(stream=io.StringIO()))
        assert made.through_caddy() == NEW
        assert len(pids_running(made.world.binary)) == 1
        assert load.wait_for_requests(50)

    assert load.result.failed == 0, load.result.summary()
    # `restart` of a switch component (in place, not zero-downtime) keeps the port it serves on
    run_service(made.settings(), Reporter(stream=io.StringIO()), "botserver", "restart")
    assert made.through_caddy() == NEW and (health(second) or {}).get("commit") == NEW
    assert made.caddy.pid == caddy_pid and made.caddy.running()  # reloaded, not restarted
    text = made.caddy.caddyfile.read_text()
    assert text == original.replace(f":{first}\n", f":{second}\n")  # only the upstream moved
    assert text[text.index("# another site") :] == other_sites
    assert len(made.backups()) >= 1
    log = made.world.deploy_log()
    assert [(e["action"], e["strategy"], e["result"], e["switch"]["live"]) for e in log] == [
        ("deploy", "switch", "ok", second),
        ("deploy", "switch", "ok", first),
        ("rollback", "switch", "ok", second),
    ]
    status = gather_status(made.settings(), made.settings().component("botserver"))
    assert status.switch is not None and status.switch["live"] == second
    assert status.health is not None and status.health.ok and status.health.commit == NEW
    verify_deployed(
        made.settings(),
        made.settings().component("botserver"),
        NEW,
        since=None,
        timeout=10,
        reporter=Reporter(stream=io.StringIO()),
    )
    assert not Path(f"{made.world.binary}.lock").exists()
    assert not Path(f"{made.world.binary}.journal").exists()


def left_as_it_was(made: SwitchWorld, before: bytes, caddy_pid: int, old_pids: list[int]) -> None:
    assert made.caddy.caddyfile.read_bytes() == before
    assert made.caddy.pid == caddy_pid
    assert pids_running(made.world.binary) == old_pids
    assert made.through_caddy() == OLD
    assert (made.world.health() or {}).get("commit") == OLD
    assert not Path(f"{made.world.binary}.lock").exists()


@pytest.mark.parametrize(
    "fault, wrapper, says",
    [
        (Fault.NEVER_HEALTHY, None, "not healthy"),
        (Fault.NONE, "validate", "adapting config"),
        (Fault.NONE, "reload", "caddy reload failed"),
        (Fault.NONE, "reload-ignored", "the reload did not take"),
    ],
    ids=["unhealthy", "validate", "reload", "confirm"],
)
def test_a_failure_leaves_traffic_where_it_was(
    switch_world: SwitchWorld, artifacts: Artifacts, fault: Fault, wrapper: str | None, says: str
):
    made = switch_world
    if wrapper:
        made.failing_caddy(wrapper)
    if fault is Fault.NEVER_HEALTHY:
        made.health_timeout = 3.0  # it answers, never ok: the whole bound is waited out
    before = made.caddy.caddyfile.read_bytes()
    caddy_pid = made.caddy.pid
    old_pids = pids_running(made.world.binary)
    old_binary = made.world.binary.read_bytes()

    with under_load(made) as load:
        assert load.wait_for_requests(50)
        with pytest.raises(DeployFailed, match=says) as failed:
            made.deploy(NEW, artifacts(NEW, fault))
        assert load.wait_for_requests(50)

    assert failed.value.exit_code == 1
    assert "traffic stayed where it was" in str(failed.value)
    assert load.result.failed == 0, load.result.summary()
    left_as_it_was(made, before, caddy_pid, old_pids)
    assert made.world.binary.read_bytes() == old_binary
    assert [e["result"] for e in made.world.deploy_log()] == ["failed, rolled back"]


def serve_named_site(made: SwitchWorld, body: str) -> str:
    """Add `https://bots.localhost:PORT` to the proxy's Caddyfile, with Caddy's internal
    certificate and `body` as its directives, reload Caddy the way its operator would, and wait
    until it answers with a certificate its CA verifies; that site's URL."""
    port = free_port()
    text = made.caddy.text().replace(
        "\tauto_https off\n", "\tauto_https disable_redirects\n\tskip_install_trust\n"
    )
    text += f"\nhttps://bots.localhost:{port} {{\n\tbind 127.0.0.1\n\ttls internal\n{body}}}\n"
    made.caddy.caddyfile.write_text(text)
    caddy = ["caddy", "reload", "--adapter", "caddyfile", "--config", str(made.caddy.caddyfile)]
    subprocess.run(caddy, env=made.caddy.environment(), check=True, capture_output=True)
    made.site_ca = str(made.caddy.storage / "pki/authorities/local/root.crt")
    url = f"https://bots.localhost:{port}"
    curl = ["curl", "-sf", "--resolve", f"bots.localhost:{port}:127.0.0.1"]

    def answers() -> bool:
        asked = [*curl, "--cacert", made.site_ca, f"{url}/health"]
        return (
            Path(made.site_ca).exists()
            and subprocess.run(asked, capture_output=True).returncode == 0
        )

    assert wait_for(answers, deadline_seconds=30)
    return url


def test_a_switch_confirms_the_new_commit_through_the_site_on_caddy(
    switch_world: SwitchWorld, artifacts: Artifacts
):
    """`switch.site`: the new commit is asked for at the site's name through Caddy's own
    listener on the proxy, its certificate (Caddy's internal CA, `site_ca`) verified."""
    made = switch_world
    made.site = serve_named_site(made, f"\treverse_proxy 127.0.0.1:{made.ports[0]}\n")

    with under_load(made) as load:
        assert load.wait_for_requests(50)
        out = made.deploy(NEW, artifacts(NEW))
        assert load.wait_for_requests(50)

    assert f"{made.site}/health answers through Caddy: commit {NEW}" in out
    assert load.result.failed == 0, load.result.summary()
    assert made.through_caddy() == NEW
    assert len(pids_running(made.world.binary)) == 1


@pytest.mark.parametrize(
    "routes, says",
    [
        (f'\trespond `{{"status":"ok","commit":"{OLD}"}}` 200\n', f"answers for commit {OLD}"),
        (None, "certificate"),
    ],
    ids=["site-routes-elsewhere", "certificate-not-verified"],
)
def test_a_site_that_does_not_answer_the_new_commit_undoes_the_switch(
    switch_world: SwitchWorld, artifacts: Artifacts, routes: str | None, says: str
):
    """Caddy's reload took and dials the new port, but the site users reach does not answer the
    new commit through Caddy (its site sends elsewhere; its certificate does not verify without
    `site_ca`): the switch is undone with no request failed."""
    made = switch_world
    made.site = serve_named_site(made, routes or f"\treverse_proxy 127.0.0.1:{made.ports[0]}\n")
    if routes is None:
        made.site_ca = None  # Caddy's internal CA is in no trust store of the proxy
    before = made.caddy.caddyfile.read_bytes()
    caddy_pid = made.caddy.pid
    old_pids = pids_running(made.world.binary)

    with under_load(made) as load:
        assert load.wait_for_requests(50)
        with pytest.raises(DeployFailed, match="through Caddy") as failed:
            made.deploy(NEW, artifacts(NEW))
        assert load.wait_for_requests(50)

    assert failed.value.exit_code == 1
    assert says in str(failed.value)
    assert "traffic stayed where it was" in str(failed.value)
    assert load.result.failed == 0, load.result.summary()
    left_as_it_was(made, before, caddy_pid, old_pids)


def test_a_switch_component_refuses_another_strategy_and_the_reverse(
    switch_world: SwitchWorld, artifacts: Artifacts
):
    with pytest.raises(PreflightError, match="--strategy switch") as refused:
        switch_world.deploy(NEW, artifacts(NEW), strategy="staged")
    assert refused.value.exit_code == 2
    with pytest.raises(PreflightError, match=r"needs components\.botserver\.switch"):
        switch_world.world.deploy(artifacts(NEW), strategy="switch")
    switch_world.caddyfile = switch_world.world.root / "no/such/Caddyfile"
    with pytest.raises(PreflightError, match=r"cannot read .*no/such/Caddyfile") as unread:
        switch_world.deploy(NEW, artifacts(NEW))
    assert unread.value.exit_code == 2
    assert not Path(f"{switch_world.world.binary}.lock").exists()
    assert (switch_world.world.health() or {}).get("commit") == OLD


def test_dry_run_prints_the_switch_plan_and_changes_nothing(
    switch_world: SwitchWorld, artifacts: Artifacts
):
    out = switch_world.deploy(NEW, artifacts(NEW), dry_run=True)
    for step in ("lock:", "upload:", "beside:", "health:", "proxy:", "drain:", "stop old:"):
        assert step in out
    assert "strategy switch" in out
    assert not switch_world.backups()


def test_the_binary_already_there_changes_nothing_and_checks_the_live_port(
    switch_world: SwitchWorld, artifacts: Artifacts
):
    pids = pids_running(switch_world.world.binary)
    out = switch_world.deploy(OLD, artifacts(OLD))
    assert "unchanged (it was there already)" in out
    assert pids_running(switch_world.world.binary) == pids
    assert not switch_world.backups()
    last = switch_world.world.deploy_log()[-1]
    assert (last["result"], last["switch"]["live"]) == ("unchanged", switch_world.ports[0])


@pytest.mark.parametrize(
    "killed_at, serves",
    [("started", OLD), ("switched", NEW)],
    ids=["new-started-caddy-on-old", "caddy-switched-old-draining"],
)
def test_recover_after_a_kill_mid_switch_ends_with_one_healthy_process_behind_caddy(
    switch_world: SwitchWorld, artifacts: Artifacts, tmp_path: Path, killed_at: str, serves: str
):
    """The deploy is SIGKILLed once its journal says `killed_at`: `--recover` keeps the process
    on the port Caddy runs, stops the other by its pid, puts that process's binary at the path,
    and unlocks; no request fails meanwhile."""
    made = switch_world
    settings = made.settings()
    script = tmp_path / "run.py"
    script.write_text(
        "import io, pickle, sys\n"
        "from gbdeploy import deploy\n"
        "from gbdeploy.output import Reporter\n"
        f"settings = pickle.loads({pickle.dumps(settings)!r})\n"
        f"deploy.run_deploy(settings, 'botserver', Reporter(stream=io.StringIO()), "
        f"artifact={str(artifacts(NEW))!r}, commit={NEW!r}, strategy='switch')\n"
    )
    journal = Path(f"{made.world.binary}.journal")
    with under_load(made) as load:
        assert load.wait_for_requests(30)
        child = subprocess.Popen([sys.executable, str(script)], env=cli_env())
        try:
            assert wait_for(
                lambda: journal.exists() and f'"{killed_at}"' in journal.read_text(),
                deadline_seconds=60,
            )
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        # both run: the kill left the new one beside the old; status shows both
        assert wait_for(lambda: len(pids_running(made.world.binary)) == 2)
        status = gather_status(settings, settings.component("botserver"))
        assert status.switch is not None
        assert all(status.switch["serving"][port] for port in made.ports)
        shown = "\n".join(format_status(settings.component("botserver"), status))
        assert "both serve: a switch in progress" in shown
        said = io.StringIO()
        deploy.run_deploy(settings, "botserver", Reporter(stream=said), recover=True)
        assert "alone (one process)" in said.getvalue()
        assert load.wait_for_requests(30)

    assert load.result.failed == 0, load.result.summary()
    assert len(pids_running(made.world.binary)) == 1
    assert made.through_caddy() == serves
    live = made.ports[0] if serves == OLD else made.ports[1]
    assert (health(live) or {}).get("commit") == serves
    assert made.world.binary.read_bytes() == artifacts(serves).read_bytes()
    assert not Path(f"{made.world.binary}.lock").exists()
    last = made.world.deploy_log()[-1]
    assert (last["recovered"], last["switch"]["live"]) == (True, live)


def test_recover_makes_the_caddyfile_dial_the_port_caddy_runs(switch_world: SwitchWorld):
    """Killed between the Caddyfile's rename and the reload: the file dials the new port, Caddy
    still runs the old config. `--recover` goes by what Caddy runs and writes the file back."""
    made = switch_world
    first, second = made.ports
    original = made.caddy.caddyfile.read_text()
    made.caddy.caddyfile.write_text(original.replace(f":{first}\n", f":{second}\n"))
    journal = Path(f"{made.world.binary}.journal")
    journal.write_text(json.dumps({"phase": "switching", "from": first, "to": second}) + "\n")
    pids = pids_running(made.world.binary)

    deploy.run_deploy(made.settings(), "botserver", Reporter(stream=io.StringIO()), recover=True)

    assert made.caddy.caddyfile.read_text() == original
    assert len(made.backups()) == 1  # the file as the kill left it
    assert pids_running(made.world.binary) == pids
    assert made.through_caddy() == OLD
    assert not journal.exists()


def test_a_process_left_on_the_idle_port_is_refused_then_recovered(
    switch_world: SwitchWorld, artifacts: Artifacts
):
    """Something of ours already serves the idle port (a switch killed before any lock was
    recorded, or started by hand): the deploy changes nothing (exit 1), `--recover` keeps the
    process Caddy dials and stops the other by its pid."""
    made = switch_world
    second = made.ports[1]
    old_pids = pids_running(made.world.binary)
    stray = subprocess.Popen(
        ["runuser", "-u", made.world.user, "--", str(made.world.binary)],
        cwd=made.world.binary.parent,
        env={**os.environ, "PORT": str(second)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert wait_for(lambda: (health(second) or {}).get("commit") == OLD)
    before = made.caddy.caddyfile.read_bytes()

    with pytest.raises(DeployFailed, match=f"already listens on the idle port {second}") as busy:
        made.deploy(NEW, artifacts(NEW))
    assert busy.value.exit_code == 1
    assert made.caddy.caddyfile.read_bytes() == before and not made.backups()
    assert len(pids_running(made.world.binary)) == 2

    deploy.run_deploy(made.settings(), "botserver", Reporter(stream=io.StringIO()), recover=True)
    assert pids_running(made.world.binary) == old_pids
    assert made.through_caddy() == OLD and health(second) is None
    stray.wait(timeout=30)


def test_an_interrupted_switch_whose_caddy_cannot_be_put_back_leaves_the_new_one_serving(
    switch_world: SwitchWorld, artifacts: Artifacts, tmp_path: Path
):
    """SIGTERM once Caddy was reloaded onto the new port, and the reload that would put it back
    fails: the process Caddy dials is never stopped (no request fails), and the deploy exits 5
    saying what runs."""
    made = switch_world
    made.failing_caddy("reload-then-hang")
    second = made.ports[1]
    script = tmp_path / "run.py"
    script.write_text(
        "import io, pickle, sys\n"
        "from gbdeploy import deploy\n"
        "from gbdeploy.errors import GbdeployError\n"
        "from gbdeploy.output import Reporter\n"
        f"settings = pickle.loads({pickle.dumps(made.settings())!r})\n"
        "try:\n"
        f"    deploy.run_deploy(settings, 'botserver', Reporter(stream=io.StringIO()), "
        f"artifact={str(artifacts(NEW))!r}, commit={NEW!r}, strategy='switch')\n"
        "except GbdeployError as error:\n"
        "    print(error)\n"
        "    sys.exit(error.exit_code)\n"
    )
    reloaded = made.world.root / "caddy-wrapper.failed-once"
    with under_load(made) as load:
        assert load.wait_for_requests(30)
        child = subprocess.Popen(
            [sys.executable, str(script)], env=cli_env(), stdout=subprocess.PIPE, text=True
        )
        assert wait_for(reloaded.exists, deadline_seconds=60)
        child.send_signal(signal.SIGTERM)
        said, _ = child.communicate(timeout=300)
        assert load.wait_for_requests(30)

    assert child.returncode == 5, said
    assert f"traffic could NOT be put back on port {made.ports[0]}" in said
    assert "--recover" in said
    assert f"the new process on port {second} is left running" in said
    assert load.result.failed == 0, load.result.summary()
    assert made.through_caddy() == NEW
    assert (health(second) or {}).get("commit") == NEW
