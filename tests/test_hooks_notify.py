"""`hooks:` and `notify:` around real deploys and rollbacks over the sshd, run as a user runs
them (the `gbdeploy` program with a gbdeploy.yaml), with a loopback HTTP receiver as the webhook."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gbdeploy.artifact import file_sha256
from gbdeploy_sandbox.service import Fault
from gbdeploy_sandbox.sshd import free_port
from tests.conftest import TEST_TOKEN, WORLD_CONFIG
from tests.deploy_world import NEW, OLD, cli_env, command_line

RUN_ENV = {
    "GITHUB_SERVER_URL": "http://127.0.0.1:3000",
    "GITHUB_REPOSITORY": "GeneralBots/gb",
    "GITHUB_RUN_NUMBER": "41",
    "GBDEPLOY_FORGE_TOKEN": TEST_TOKEN,
}


class Receiver:
    """A webhook on 127.0.0.1 that keeps every POSTed JSON body."""

    def __init__(self) -> None:
        bodies: list[dict] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                bodies.append({"raw": raw.decode(), "type": self.headers.get("Content-Type")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cr3t-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posted(self) -> list[dict]:
        return [json.loads(body["raw"]) for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def gbdeploy(world, tmp_path):
    """`gbdeploy(*args, hooks=..., notify=...)`: the program in tmp_path with world's config."""
    program = command_line(world, tmp_path)
    config_path = tmp_path / "gbdeploy.yaml"
    base = json.loads(config_path.read_text())

    def run(*args: str, hooks=None, notify=None) -> subprocess.CompletedProcess:
        config = dict(base)
        if hooks:
            config["hooks"] = hooks
        if notify:
            config["notify"] = notify
        config_path.write_text(json.dumps(config))
        return subprocess.run(
            [*program, *args],
            cwd=tmp_path,
            env={**cli_env(), **RUN_ENV},
            capture_output=True,
            text=True,
            timeout=180,
        )

    return run


def recording(name: str, directory: Path) -> str:
    return f"env | grep '^GBDEPLOY_' | grep -v TOKEN | sort > {directory / name}.env"


def seen(directory: Path, name: str) -> dict[str, str]:
    path = directory / f"{name}.env"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def deploy(gbdeploy, artifact: Path, commit: str, **config) -> subprocess.CompletedProcess:
    return gbdeploy(
        "deploy", "botserver", "--artifact", str(artifact), "--commit", commit, **config
    )


def test_hooks_see_the_deploys_facts(world, artifacts, gbdeploy, tmp_path):
    assert deploy(gbdeploy, artifacts(OLD), OLD).returncode == 0
    hooks = {
        name: recording(name, tmp_path) for name in ("pre_deploy", "post_deploy", "on_failure")
    }

    done = deploy(gbdeploy, artifacts(NEW), NEW, hooks=hooks)

    assert done.returncode == 0, done.stderr
    pre, post = seen(tmp_path, "pre_deploy"), seen(tmp_path, "post_deploy")
    assert pre["GBDEPLOY_COMPONENT"] == "botserver"
    assert pre["GBDEPLOY_TARGET"] == "system"
    assert pre["GBDEPLOY_FROM_COMMIT"] == OLD
    assert pre["GBDEPLOY_TO_COMMIT"] == NEW
    assert pre["GBDEPLOY_SHA256"] == file_sha256(artifacts(NEW))
    assert pre["GBDEPLOY_STRATEGY"] == "staged"
    assert pre["GBDEPLOY_RESULT"] == ""
    assert pre["GBDEPLOY_RUN_URL"] == "http://127.0.0.1:3000/GeneralBots/gb/actions/runs/41"
    assert post["GBDEPLOY_RESULT"] == "ok"
    assert seen(tmp_path, "on_failure") == {}
    assert (world.health() or {}).get("commit") == NEW


def test_a_failing_pre_deploy_hook_stops_the_deploy_before_anything_changes(
    world, artifacts, gbdeploy, tmp_path
):
    assert deploy(gbdeploy, artifacts(OLD), OLD).returncode == 0
    sha, pids = file_sha256(world.binary), world.running()
    hooks = {
        "pre_deploy": "echo 'migrations pending' >&2; exit 3",
        "post_deploy": recording("post_deploy", tmp_path),
        "on_failure": recording("on_failure", tmp_path),
    }

    refused = deploy(gbdeploy, artifacts(NEW), NEW, hooks=hooks)

    assert refused.returncode == 2
    assert "migrations pending" in refused.stdout + refused.stderr
    assert "pre_deploy hook exited 3" in refused.stderr
    assert file_sha256(world.binary) == sha
    assert world.running() == pids
    assert (world.health() or {}).get("commit") == OLD
    assert not Path(f"{world.binary}.lock").exists()
    assert not Path(f"{world.binary}.new").exists()
    assert seen(tmp_path, "post_deploy") == {}
    assert seen(tmp_path, "on_failure")["GBDEPLOY_RESULT"] == "failed, nothing changed"


def test_every_deploy_and_rollback_is_posted_without_the_token(
    world, artifacts, gbdeploy, receiver
):
    notify = {"webhook": receiver.url}
    assert deploy(gbdeploy, artifacts(OLD), OLD, notify=notify).returncode == 0
    assert deploy(gbdeploy, artifacts(NEW), NEW, notify=notify).returncode == 0
    rolled = gbdeploy("rollback", "botserver", "--yes", notify=notify)
    assert rolled.returncode == 0, rolled.stderr

    first, second, rollback = receiver.posted()
    assert (first["event"], first["from_commit"], first["to_commit"]) == ("deploy", None, OLD)
    assert (second["from_commit"], second["to_commit"], second["result"]) == (OLD, NEW, "ok")
    assert second["component"] == "botserver"
    assert second["ok"] is True
    assert "@" in second["who"]
    assert second["run_url"] == "http://127.0.0.1:3000/GeneralBots/gb/actions/runs/41"
    assert second["sha256"] == file_sha256(artifacts(NEW))
    assert "botserver" in second["text"] and NEW[:7] in second["text"]
    assert (rollback["event"], rollback["from_commit"], rollback["to_commit"]) == (
        "rollback",
        NEW,
        OLD,
    )
    assert all(body["type"] == "application/json" for body in receiver.bodies)
    assert not any(TEST_TOKEN in body["raw"] for body in receiver.bodies)


def test_a_token_in_a_ci_variable_is_masked_in_the_post(
    world, artifacts, gbdeploy, receiver, monkeypatch
):
    # A runner registered with its credentials in the instance URL passes them on to each job in
    # GITHUB_SERVER_URL, from which the post's run_url is made.
    server = f"http://ci:{TEST_TOKEN}@127.0.0.1:3000"
    monkeypatch.setitem(RUN_ENV, "GITHUB_SERVER_URL", server)

    done = deploy(gbdeploy, artifacts(OLD), OLD, notify={"webhook": receiver.url})

    assert done.returncode == 0, done.stderr
    (body,) = receiver.posted()
    assert body["run_url"].endswith("@127.0.0.1:3000/GeneralBots/gb/actions/runs/41")
    assert TEST_TOKEN not in receiver.bodies[0]["raw"]


def test_a_failed_deploy_posts_its_result_and_the_services_last_log_lines(
    world, artifacts, gbdeploy, receiver, tmp_path
):
    assert deploy(gbdeploy, artifacts(OLD), OLD).returncode == 0
    hooks = {"on_failure": recording("on_failure", tmp_path)}

    failed = deploy(
        gbdeploy,
        artifacts(NEW, Fault.FAIL_AT_START),
        NEW,
        hooks=hooks,
        notify={"webhook": receiver.url},
    )

    assert failed.returncode == 1
    (body,) = receiver.posted()
    assert body["ok"] is False
    assert body["result"] == "failed, rolled back"
    assert (body["from_commit"], body["to_commit"]) == (OLD, NEW)
    assert any("cannot start" in line for line in body["log_tail"])
    assert body["error"]
    assert seen(tmp_path, "on_failure")["GBDEPLOY_RESULT"] == "failed, rolled back"
    assert (world.health() or {}).get("commit") == OLD


def test_a_dead_webhook_never_fails_a_deploy(world, artifacts, gbdeploy):
    done = deploy(
        gbdeploy, artifacts(NEW), NEW, notify={"webhook": f"http://127.0.0.1:{free_port()}/x"}
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() if "warning: notify" in line]
    assert len(warnings) == 1
    assert (world.health() or {}).get("commit") == NEW


def test_a_webhook_that_never_answers_is_given_up_on(world, artifacts, gbdeploy):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/secret-token-path"
        done = deploy(gbdeploy, artifacts(NEW), NEW, notify={"webhook": url, "timeout": 0.5})
    finally:
        silent.close()
    assert done.returncode == 0, done.stderr
    assert "warning: notify" in done.stdout
    assert "secret-token-path" not in done.stdout + done.stderr
    assert (world.health() or {}).get("commit") == NEW


def test_a_dry_run_runs_no_hook_and_posts_nothing(world, artifacts, gbdeploy, receiver, tmp_path):
    hooks = {
        name: recording(name, tmp_path) for name in ("pre_deploy", "post_deploy", "on_failure")
    }
    planned = gbdeploy(
        "deploy",
        "botserver",
        "--artifact",
        str(artifacts(NEW)),
        "--dry-run",
        hooks=hooks,
        notify={"webhook": receiver.url},
    )
    assert planned.returncode == 0, planned.stderr
    assert "hooks.pre_deploy" in planned.stdout
    assert "notify: POST" in planned.stdout
    assert not list(tmp_path.glob("*.env"))
    assert receiver.bodies == []
    assert not world.binary.exists()


def test_bad_hook_and_notify_config_is_exit_2_naming_the_key(gbdeploy):
    bad = gbdeploy("status", "botserver", notify={"webhook": "ftp://127.0.0.1/x"})
    assert bad.returncode == 2
    assert "notify.webhook" in bad.stderr
    typo = gbdeploy("status", "botserver", hooks={"pre_deplyo": "true"})
    assert typo.returncode == 2
    assert "hooks.pre_deplyo" in typo.stderr


# --- release ------------------------------------------------------------------------------------
def test_a_release_is_posted_with_its_commits_and_who_made_it(git_world, run_gbdeploy, receiver):

    git_world.write_config(WORLD_CONFIG + f"notify: {{webhook: '{receiver.url}'}}\n")
    before = git_world.pointer("alm")
    sha = git_world.commit_in_submodule("Fix the login")

    done = run_gbdeploy("release", "botserver", "--no-wait")

    assert done.code == 0, done.text
    (body,) = receiver.posted()
    assert (body["event"], body["component"]) == ("release", "botserver")
    assert (body["from_commit"], body["to_commit"]) == (before, sha)
    assert body["result"] == "pushed, not waited for"
    assert body["who"]
    assert TEST_TOKEN not in receiver.bodies[0]["raw"]

    git_world.reject_pushes("alm", "botserver")
    git_world.commit_in_submodule("Another fix")
    refused = run_gbdeploy("release", "botserver", "--no-wait")
    assert refused.code == 1
    assert receiver.posted()[-1]["ok"] is False
    assert "pushes are frozen" in receiver.posted()[-1]["error"]
