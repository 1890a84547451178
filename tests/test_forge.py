"""The Forgejo side: client, find_run, wait_for_run and the runs/wait tasks, against the
loopback emulator (every exchange is checked against Forgejo's swagger by the fixture)."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from gbdeploy.config import DEFAULTS, ForgeSettings, Secret, Settings
from gbdeploy.errors import (
    CIRunFailed,
    ConfigError,
    ForgeAuthError,
    ForgeNotFound,
    ForgeUnavailable,
    GbdeployError,
    UsageError,
    WaitTimeout,
)
from gbdeploy.forge import ForgeClient, RunSearch, find_run, planned_requests, wait_for_run
from gbdeploy.forge.models import Run
from gbdeploy.forge.placement import repository_of_url, workflow_home
from gbdeploy.output import Reporter
from gbdeploy.program import optional_positionals, program
from gbdeploy.runs import latest_run_line, run_runs, run_wait
from gbdeploy_sandbox.clock import FakeClock
from gbdeploy_sandbox.forgejo import ExecutorContext, ForgejoEmulator, Script

SHA = "3f2a9c0d1e4b5a6978877665544332211000aaaa"
OTHER_SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "emulator-token-0123456789"


@pytest.fixture(autouse=True)
def _token_env(monkeypatch):
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", TOKEN)
    monkeypatch.delenv("FORGEJO_TOKEN", raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def client_for(emulator, clock: FakeClock, token: str | None = None, **options) -> ForgeClient:
    return ForgeClient(emulator.forge_settings(token), sleep=clock.sleep, clock=clock, **options)


def capture() -> tuple[Reporter, io.StringIO]:
    stream = io.StringIO()
    return Reporter(stream=stream, secrets=(TOKEN,)), stream


# ---------------------------------------------------------------------------- the client


def test_check_access_sends_token_header_and_reads_repo(forgejo, clock):
    repo = client_for(forgejo, clock).check_access()

    assert repo["full_name"] == "GeneralBots/gb"
    (exchange,) = forgejo.requests("/repos/GeneralBots/gb")
    assert exchange.headers["authorization"] == "token ***"
    assert exchange.query == {}


def test_emulator_takes_bearer_and_refuses_query_tokens():
    # Not the schema-checked fixture: a query-string token is itself a violation it would flag.
    with ForgejoEmulator(token=TOKEN) as forgejo, httpx.Client() as http:
        path = f"{forgejo.url}/api/v1/repos/GeneralBots/gb"
        assert http.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert http.get(path, params={"token": TOKEN}).status_code == 401
        assert http.get(path).status_code == 404  # anonymous: a private repository is not there
        dispatch = f"{path}/actions/workflows/botserver.yaml/dispatches"
        assert http.post(dispatch, json={"ref": "main"}).status_code == 401


def test_runs_by_sha_are_typed_runs_newest_first(forgejo, clock):
    forgejo.on_push(OTHER_SHA)
    forgejo.on_push(SHA, title="Update submodule botserver to 3f2a9c0")

    page = client_for(forgejo, clock).runs(head_sha=SHA, event="push")

    assert page.total_count == 2
    assert [r.workflow_id for r in page.runs] == ["botui.yaml", "botserver.yaml"]
    run = page.runs[1]
    assert run.commit_sha == SHA
    assert run.status == "waiting"
    assert run.started is None and run.stopped is None  # 1970 means "not yet"
    assert run.title == "Update submodule botserver to 3f2a9c0"
    assert run.html_url.endswith(f"/GeneralBots/gb/actions/runs/{run.index_in_repo}")
    (listing,) = forgejo.requests("/actions/runs")
    assert listing.query["head_sha"] == [SHA] and listing.query["event"] == ["push"]


def test_iter_runs_pages_by_total_count(forgejo_factory, clock):
    forgejo = forgejo_factory(workflows=["botserver.yaml"])
    for number in range(57):
        forgejo.on_push(f"{number:040x}")

    runs = list(client_for(forgejo, clock).iter_runs())

    assert len(runs) == 57
    assert [r.index_in_repo for r in runs] == list(range(57, 0, -1))
    pages = [e.query["page"] for e in forgejo.requests("/actions/runs")]
    assert pages == [["1"], ["2"]]


def test_jobs_and_log_tail_use_a_range_request(forgejo, clock):
    (run_id,) = forgejo.on_push(
        SHA,
        workflows=["botserver.yaml"],
        script=Script("failure", waiting_reads=0, running_reads=0, log="x" * 500 + "\nLAST"),
    )
    client = client_for(forgejo, clock)
    assert client.run(run_id).status == "failure"

    (job,) = client.jobs(run_id)
    tail = client.job_log(job.id, tail_bytes=10)

    assert job.status == "failure" and job.name == "deploy"
    assert tail == "xxxxx\nLAST"
    (log_request,) = forgejo.requests("/logs")
    assert log_request.headers["range"] == "bytes=-10"
    assert log_request.status == 206


def test_dispatch_returns_the_new_run(forgejo, clock):
    forgejo.set_ref("main", SHA)
    client = client_for(forgejo, clock)

    dispatched = client.dispatch("botserver.yaml", "main", {"reason": "test"})

    assert dispatched is not None
    run = client.run(dispatched.id)
    assert run.event == "" and run.trigger_event == "workflow_dispatch"  # as Forgejo stores it
    assert run.cause == "workflow_dispatch" and run.commit_sha == SHA
    assert run.index_in_repo == dispatched.run_number
    (post,) = forgejo.requests("/dispatches", method="POST")
    assert post.json == {"ref": "main", "inputs": {"reason": "test"}, "return_run_info": True}


def test_dispatch_of_unknown_workflow_explains_forgejos_500(forgejo, clock):
    forgejo.set_ref("main", SHA)

    with pytest.raises(ForgeNotFound) as caught:
        client_for(forgejo, clock).dispatch("nope.yaml", "main")

    assert caught.value.exit_code == 2
    assert ".forgejo/workflows/nope.yaml" in str(caught.value)
    assert "'main'" in str(caught.value)
    assert len(forgejo.requests("/dispatches")) == 1  # a POST is never retried


def test_dispatch_with_a_read_only_token_names_the_write_scope(forgejo_factory, clock):
    forgejo = forgejo_factory(scopes=["read:repository"])
    forgejo.set_ref("main", SHA)

    with pytest.raises(ForgeAuthError) as caught:
        client_for(forgejo, clock).dispatch("botserver.yaml", "main")

    assert caught.value.exit_code == 2
    assert "write:repository" in str(caught.value)
    assert "GBDEPLOY_FORGE_TOKEN" in str(caught.value)


def test_old_server_without_runs_falls_back_to_tasks(forgejo_factory, clock):
    forgejo = forgejo_factory(version="11.0.3", workflows=["botserver.yaml"])
    (run_id,) = forgejo.on_push(SHA, script=Script(waiting_reads=1, running_reads=1))
    client = client_for(forgejo, clock)

    first = client.runs(head_sha=SHA, event="push")  # waiting: no task yet, so no run listed
    second = client.runs(head_sha=SHA, event="push")

    assert first.runs == []
    (run,) = second.runs
    emulated = forgejo.run(run_id)
    assert run.source == "tasks" and run.id == emulated.index  # the run number is the id
    assert run.commit_sha == SHA and run.workflow_id == "botserver.yaml"
    assert run.status == "running" and run.started is not None
    assert client.run(run.id).status == "success"
    assert forgejo.requests("/actions/runs")[0].status == 404
    assert len(forgejo.requests("/actions/tasks")) >= 2


def test_server_errors_that_recover_are_retried(forgejo, clock):
    forgejo.on_push(SHA)
    forgejo.fail_next(2)
    forgejo.drop_next(1)

    page = client_for(forgejo, clock).runs(head_sha=SHA)

    assert page.total_count == 2
    assert [e.status for e in forgejo.requests("/actions/runs")] == [500, 500, None, 200]
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_server_errors_that_last_are_forge_unavailable(forgejo, clock):
    forgejo.fail_next(50, status=503)

    with pytest.raises(ForgeUnavailable) as caught:
        client_for(forgejo, clock, retries=3).runs()

    assert caught.value.exit_code == 1
    assert "after 4 attempts" in str(caught.value) and "503" in str(caught.value)
    assert len(forgejo.exchanges) == 4


def test_a_refused_token_is_exit_2_and_never_shown(forgejo, clock):
    wrong = "s3cret-wrong-token-value"

    with pytest.raises(ForgeAuthError) as caught:
        client_for(forgejo, clock, token=wrong).check_access()

    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert wrong not in message and wrong not in repr(caught.value)
    assert "GBDEPLOY_FORGE_TOKEN" in message and "read:repository" in message


def test_no_token_on_a_private_repository_says_its_404_means_no_token(forgejo, clock):
    with pytest.raises(ForgeNotFound) as caught:
        client_for(forgejo, clock, token="").runs()

    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "no token was given" in message and "private repository" in message
    assert "export GBDEPLOY_FORGE_TOKEN" in message


def test_no_token_on_a_public_repository_reads_but_may_not_dispatch(forgejo_factory, clock):
    forgejo = forgejo_factory(private=False)
    forgejo.set_ref("main", SHA)
    client = client_for(forgejo, clock, token="")

    assert client.runs().runs == []
    with pytest.raises(ForgeAuthError) as caught:
        client.dispatch("botserver.yaml", "main")

    assert "no token" in str(caught.value) and "export GBDEPLOY_FORGE_TOKEN" in str(caught.value)


def test_unknown_repository_names_owner_and_repo(forgejo, clock):
    settings = ForgeSettings(forgejo.url, "GeneralBots", "gb-typo", 5.0, Secret(TOKEN))

    with pytest.raises(ForgeNotFound) as caught:
        ForgeClient(settings, sleep=clock.sleep, clock=clock).runs(head_sha=SHA)

    assert caught.value.exit_code == 2
    assert "GeneralBots/gb-typo" in str(caught.value)
    assert "forge.repo (gb-typo)" in str(caught.value)


def test_unknown_run_id_says_where_ids_come_from(forgejo, clock):
    forgejo.on_push(SHA)

    with pytest.raises(ForgeNotFound) as caught:
        client_for(forgejo, clock).run(99999)

    assert "no run with id 99999" in str(caught.value) and "gbdeploy runs" in str(caught.value)


def test_redirect_and_non_api_answers_are_explained():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/gb"):
            return httpx.Response(301, headers={"Location": "https://forge.example/api/v1/x"})
        return httpx.Response(200, text="<html>login</html>", headers={"Content-Type": "text/html"})

    settings = ForgeSettings("http://127.0.0.1:9", "GeneralBots", "gb", 5.0, Secret(TOKEN))
    client = ForgeClient(settings, transport=httpx.MockTransport(handler))
    with pytest.raises(ConfigError, match="redirects"):
        client.check_access()
    with pytest.raises(ForgeUnavailable, match="not Forgejo's API"):
        client.runs()


def test_the_token_is_in_no_repr_and_no_dry_run_line(forgejo, clock):
    client = client_for(forgejo, clock)

    search = RunSearch(SHA, "botserver.yaml", "main", dispatch=False)
    lines = [str(line) for line in planned_requests(client, search)]

    text = "\n".join(lines) + repr(client) + repr(client._http.auth) + repr(client.settings)
    assert TOKEN not in text
    assert "Authorization: token ***" in lines[0]
    assert lines[1].startswith("POST ") and '{"ref":"","inputs":{}' in lines[1]
    assert lines[2].startswith(
        f"GET {forgejo.url}/api/v1/repos/GeneralBots/gb/actions/runs?head_sha={SHA}&event=push"
    )
    assert lines[3].startswith("POST ") and f'"ref":"{SHA}"' in lines[3]
    assert forgejo.exchanges == []  # planning sends nothing


def test_the_dry_run_plan_is_what_the_release_then_sends(forgejo_factory, clock):
    forgejo = forgejo_factory(workflows=["botserver.yaml"], appear_after=1)
    forgejo.on_push(SHA, script=Script("failure", waiting_reads=0, running_reads=0))
    client = client_for(forgejo, clock)
    search = RunSearch(SHA, "botserver.yaml", "main", dispatch=False)
    planned = {
        re.sub(r"\d+", "N", line.split("  [")[0].split(" {")[0].replace("{run_id}", "1"))
        for line in map(str, planned_requests(client, search))
    }
    reporter, _ = capture()

    client.check_access()
    client.check_write_scope("botserver.yaml")
    run = find_run(
        client,
        SHA,
        "botserver.yaml",
        appear_timeout=60,
        dispatch=False,
        ref="main",
        reporter=reporter,
    )
    with pytest.raises(CIRunFailed):
        wait_for_run(client, run.id, timeout=60, poll_interval=5, reporter=reporter)

    sent = set()
    for exchange in forgejo.exchanges:
        query = "&".join(f"{k}={v[0]}" for k, v in exchange.query.items())
        url = f"{exchange.method} {forgejo.url}{exchange.path}" + (f"?{query}" if query else "")
        sent.add(re.sub(r"\d+", "N", url))
    unplanned = {u for u in sent - planned if "/actions/jobs/" not in u}  # the log: in a note
    assert not unplanned


# ---------------------------------------------------------------------------- find_run


def find_push_run(forgejo, clock, reporter: Reporter | None = None) -> Run:
    """`find_run` of botserver.yaml for SHA released to main: the push run, waited for 30 s
    (polled every 5 s), else a dispatch."""
    return find_run(
        client_for(forgejo, clock),
        SHA,
        "botserver.yaml",
        appear_timeout=30,
        dispatch=False,
        ref="main",
        reporter=reporter or capture()[0],
        poll_interval=5,
    )


def test_find_run_waits_for_the_push_run_to_appear(forgejo_factory, clock):
    forgejo = forgejo_factory(appear_after=3)
    forgejo.on_push(SHA)
    reporter, out = capture()

    run = find_run(
        client_for(forgejo, clock),
        SHA,
        "botserver.yaml",
        appear_timeout=120,
        dispatch=False,
        ref="main",
        reporter=reporter,
        poll_interval=5,
    )

    assert run.workflow_id == "botserver.yaml" and run.event == "push" and run.commit_sha == SHA
    assert len(forgejo.requests("/actions/runs")) == 4
    assert forgejo.requests("/dispatches") == []
    assert (
        f"found run {run.id} botserver.yaml (#{run.index_in_repo} in the web UI)" in out.getvalue()
    )


def test_find_run_follows_the_newest_push_run_of_the_commit(forgejo, clock):
    # The commit was pushed to a branch first (its run failed there), then released to main.
    [on_the_branch] = forgejo.on_push(SHA, ref="refs/heads/try", workflows=["botserver.yaml"])
    forgejo.finish(on_the_branch, "failure")
    [released] = forgejo.on_push(SHA, workflows=["botserver.yaml"])
    reporter, out = capture()

    run = find_push_run(forgejo, clock, reporter)

    assert run.id == released != on_the_branch
    assert not run.finished
    assert f"found run {released} " in out.getvalue()


def test_find_run_follows_the_newer_of_two_push_runs_of_the_commit_on_the_branch(forgejo, clock):
    # The commit reached main twice (main was reset and the release pushed again): two push
    # runs of it on main; the first failed. The newer one is the release's.
    [first] = forgejo.on_push(SHA, workflows=["botserver.yaml"])
    forgejo.finish(first, "failure")
    [again] = forgejo.on_push(SHA, workflows=["botserver.yaml"])

    run = find_push_run(forgejo, clock)

    assert run.id == again != first
    assert not run.finished


def test_find_run_ignores_a_newer_push_of_the_commit_to_another_branch(forgejo, clock):
    # Released to main, then the same commit pushed to a branch: that run builds the branch's
    # workflow (no deploy), so waiting for it would report a deploy that never happened.
    [released] = forgejo.on_push(SHA, workflows=["botserver.yaml"])
    [on_the_branch] = forgejo.on_push(SHA, ref="refs/heads/try", workflows=["botserver.yaml"])
    reporter, _ = capture()

    run = find_push_run(forgejo, clock, reporter)

    assert run.id == released != on_the_branch


def test_find_run_dispatches_when_no_push_run_appears(forgejo, clock):
    forgejo.on_push(SHA, workflows=["botui.yaml"])  # the push started only the other workflow
    reporter, out = capture()

    run = find_push_run(forgejo, clock, reporter)

    assert run.cause == "workflow_dispatch" and run.workflow_id == "botserver.yaml"
    assert run.commit_sha == SHA
    assert clock.slept == 30
    assert f"appeared within 30s: dispatching botserver.yaml at {SHA[:12]}" in out.getvalue()
    assert len(forgejo.requests("/dispatches", method="POST")) == 1


def test_a_dispatch_builds_the_released_commit_even_when_the_branch_moved(forgejo, clock):
    forgejo.on_push(SHA, workflows=["botui.yaml"])
    forgejo.set_ref("main", "a" * 40)  # someone pushed to main after this release's push

    run = find_run(
        client_for(forgejo, clock),
        SHA,
        "botserver.yaml",
        appear_timeout=30,
        dispatch=True,
        ref="main",
        reporter=capture()[0],
    )

    assert run.commit_sha == SHA
    (sent,) = forgejo.requests("/dispatches", method="POST")
    assert sent.json["ref"] == SHA


def test_find_run_with_dispatch_does_not_wait(forgejo, clock):
    forgejo.on_push(SHA)
    reporter, _ = capture()

    run = find_run(
        client_for(forgejo, clock),
        SHA,
        "botserver.yaml",
        appear_timeout=120,
        dispatch=True,
        ref="main",
        reporter=reporter,
    )

    assert run.cause == "workflow_dispatch"
    assert clock.sleeps == []
    assert forgejo.requests("head_sha") == []


def test_find_run_on_a_server_without_run_info_finds_the_dispatched_run(forgejo_factory, clock):
    forgejo = forgejo_factory(version="10.0.0", workflows=["botserver.yaml"])
    forgejo.set_ref("main", SHA)
    reporter, _ = capture()

    run = find_run(
        client_for(forgejo, clock),
        SHA,
        "botserver.yaml",
        appear_timeout=60,
        dispatch=True,
        ref="main",
        reporter=reporter,
        poll_interval=5,
    )

    assert run.source == "tasks" and run.commit_sha == SHA
    assert forgejo.requests("/dispatches")[0].status == 204


# ---------------------------------------------------------------------------- wait_for_run


def test_wait_reports_changes_and_returns_the_successful_run(forgejo, clock):
    (run_id, _) = forgejo.on_push(SHA, script=Script(waiting_reads=3, running_reads=4))
    reporter, out = capture()

    run = wait_for_run(
        client_for(forgejo, clock), run_id, timeout=600, poll_interval=5, reporter=reporter
    )

    assert run.succeeded and run.id == run_id
    lines = out.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == [
        "waiting",
        "waiting → running",
        "running → success",
    ]
    assert len(forgejo.requests(f"/actions/runs/{run_id}")) == 8


def test_wait_prints_a_heartbeat_while_nothing_changes(forgejo, clock):
    (run_id, _) = forgejo.on_push(SHA, script=Script(waiting_reads=0, running_reads=40))
    reporter, out = capture()

    wait_for_run(
        client_for(forgejo, clock), run_id, timeout=3600, poll_interval=5, reporter=reporter
    )

    heartbeats = [line for line in out.getvalue().splitlines() if "still running" in line]
    assert heartbeats and len(heartbeats) < 40
    assert max(clock.sleeps) <= 20  # backoff is capped


def test_wait_on_a_failed_run_is_exit_3_with_the_log_tail(forgejo, clock):
    log = "".join(f"step {n}\n" for n in range(100)) + "error: linking botserver failed\n"
    (run_id, _) = forgejo.on_push(SHA, script=Script("failure", log=log))
    reporter, _ = capture()

    with pytest.raises(CIRunFailed) as caught:
        wait_for_run(
            client_for(forgejo, clock), run_id, timeout=600, poll_interval=5, reporter=reporter
        )

    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert "finished with status failure" in message
    assert "| error: linking botserver failed" in message and "| step 99" in message
    assert "| step 1\n" not in message  # only the tail
    assert f"/actions/runs/{forgejo.run(run_id).index}" in message


def test_wait_gives_up_at_the_timeout_with_the_resume_command(forgejo, clock):
    (run_id, _) = forgejo.on_push(SHA, script=Script(hold=True))
    reporter, _ = capture()

    with pytest.raises(WaitTimeout) as caught:
        wait_for_run(
            client_for(forgejo, clock), run_id, timeout=60, poll_interval=5, reporter=reporter
        )

    assert caught.value.exit_code == 4
    assert f"gbdeploy wait {run_id}" in [line.strip() for line in caught.value.hint.splitlines()]
    assert "still waiting" in caught.value.message
    assert clock.slept == 60
    assert forgejo.requests("/cancel") == []  # CI is left alone


def test_ctrl_c_while_waiting_prints_the_resume_command(forgejo, clock):
    (run_id, _) = forgejo.on_push(SHA, script=Script(hold=True))
    reporter, out = capture()
    client = client_for(forgejo, clock)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    client.sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        wait_for_run(client, run_id, timeout=60, poll_interval=5, reporter=reporter)

    assert "resume with:" in out.getvalue()
    assert f"gbdeploy wait {run_id}" in [line.strip() for line in out.getvalue().splitlines()]


def test_wait_rides_out_a_forge_outage(forgejo, clock):
    (run_id, _) = forgejo.on_push(SHA, script=Script(waiting_reads=1, running_reads=1))
    reporter, out = capture()
    client = client_for(forgejo, clock, retries=1)
    forgejo.fail_next(3)

    run = wait_for_run(client, run_id, timeout=600, poll_interval=5, reporter=reporter)

    assert run.succeeded
    assert "forge not answering" in out.getvalue()


def test_an_executor_drives_the_run_like_a_runner(forgejo_factory):
    def executor(context: ExecutorContext) -> str:
        context.log(f"building {context.workflow} at {context.commit_sha[:7]}\n")
        context.log("deploy: health check failed\n")
        return "failure"

    forgejo = forgejo_factory(executor=executor, workflows=["botserver.yaml"])
    (run_id,) = forgejo.on_push(SHA)
    client = ForgeClient(forgejo.forge_settings(), sleep=lambda s: time.sleep(0.01))
    reporter, _ = capture()

    with pytest.raises(CIRunFailed) as caught:
        wait_for_run(client, run_id, timeout=30, poll_interval=0.01, reporter=reporter)

    assert "| building botserver.yaml at 3f2a9c0" in str(caught.value)
    assert "| deploy: health check failed" in str(caught.value)


def test_a_git_hook_can_report_a_push(forgejo, clock):
    answer = httpx.post(
        f"{forgejo.url}/_emulator/push", json={"sha": SHA, "ref": "refs/heads/main"}
    )

    assert answer.status_code == 201
    page = client_for(forgejo, clock).runs(head_sha=SHA, event="push")
    assert sorted(r.id for r in page.runs) == sorted(answer.json()["runs"])


# ---------------------------------------------------------------------------- through the CLI


@pytest.fixture
def project(tmp_path, monkeypatch, forgejo):
    (tmp_path / "gbdeploy.yaml").write_text(
        f"forge: {{url: '{forgejo.url}', owner: GeneralBots, repo: gb, timeout: 5}}\n"
        "release: {poll_interval: 0.01, timeout: 30}\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def gbdeploy(*argv: str, capsys) -> tuple[int, str, str]:
    try:
        program.run(optional_positionals(["gbdeploy", *argv]), exit=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_runs_prints_a_table(project, forgejo, capsys):
    forgejo.on_push(SHA, title="Update submodule botserver to 3f2a9c0")
    forgejo.on_push(OTHER_SHA)

    code, out, err = gbdeploy("runs", "botserver", "--limit", "5", capsys=capsys)

    assert code == 0, err
    header, *rows = out.splitlines()[1:]
    assert header.split()[:6] == ["ID", "#", "STATUS", "EVENT", "COMMIT", "WORKFLOW"]
    assert len(rows) == 2 and all("botserver.yaml" in row for row in rows)
    assert rows[0].split()[4] == OTHER_SHA[:10] and rows[1].split()[4] == SHA[:10]
    assert "Update submodule botserver to 3f2a9c0" in rows[1]


def test_cli_runs_lists_no_more_than_its_limit(project, forgejo, capsys):
    shas = [f"{n:040x}" for n in range(1, 5)]
    for sha in shas:
        forgejo.on_push(sha, workflows=["botserver.yaml"])

    code, out, err = gbdeploy("runs", "botserver", "--limit", "2", capsys=capsys)

    assert code == 0, err
    rows = out.splitlines()[2:]
    assert [row.split()[4] for row in rows] == [shas[3][:10], shas[2][:10]]


def test_cli_wait_for_a_run_id(project, forgejo, capsys):
    (run_id, _) = forgejo.on_push(SHA)

    code, out, _ = gbdeploy("wait", str(run_id), capsys=capsys)

    assert code == 0
    assert "running → success" in out and "succeeded" in out


def test_cli_wait_by_sha_of_a_failed_run_exits_3(project, forgejo, capsys):
    forgejo.on_push(SHA, workflows=["botserver.yaml"], script=Script("failure", log="boom\n"))

    code, _, err = gbdeploy("wait", "--sha", SHA[:12], capsys=capsys)

    assert code == 3
    assert "| boom" in err


def test_cli_wait_on_a_skipped_run_exits_3_it_deployed_nothing(project, forgejo, capsys):
    # Forgejo marks a run `skipped` when all its jobs were (an `if:` that was false): no deploy.
    forgejo.on_push(SHA, workflows=["botserver.yaml"], script=Script("skipped", log=""))

    code, out, err = gbdeploy("wait", "--sha", SHA[:12], capsys=capsys)

    assert code == 3, out + err
    assert "finished with status skipped" in err and "succeeded" not in out


def test_cli_wait_with_a_bad_token_exits_2_without_the_token(project, forgejo, capsys, monkeypatch):
    (run_id, _) = forgejo.on_push(SHA)
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", "wrong-token-value-42")

    code, out, err = gbdeploy("wait", str(run_id), capsys=capsys)

    assert code == 2
    assert "wrong-token-value-42" not in out + err
    assert "GBDEPLOY_FORGE_TOKEN" in err


def test_cli_wait_needs_a_run_id_or_a_sha(project, capsys):
    code, _, err = gbdeploy("wait", capsys=capsys)

    assert code == 2 and "RUN_ID or --sha" in err


def test_optional_positionals_get_their_flag():
    assert optional_positionals(["gbdeploy", "wait", "12"]) == [
        "gbdeploy",
        "wait",
        "--run-id",
        "12",
    ]
    assert optional_positionals(["gbdeploy", "runs", "botui"]) == [
        "gbdeploy",
        "runs",
        "--component",
        "botui",
    ]
    assert optional_positionals(["gbdeploy", "wait", "--sha", "ab"]) == [
        "gbdeploy",
        "wait",
        "--sha",
        "ab",
    ]
    assert optional_positionals(["gbdeploy", "release", "wait"]) == ["gbdeploy", "release", "wait"]


# ---------------------------------------------------------------------------- real Forgejo's ways

GBO_WORKFLOW = """
on: {push: {branches: [main]}, workflow_dispatch: {}}
jobs:
  deploy:
    runs-on: gbo
    steps: [{run: "true"}]
"""
QUEUEING = GBO_WORKFLOW + "concurrency: {group: deploy-botserver, cancel-in-progress: false}\n"
UNLIMITED = GBO_WORKFLOW + "concurrency: {cancel-in-progress: false}\n"


def test_a_read_only_token_is_refused_by_the_write_probe_without_a_run(forgejo_factory, clock):
    forgejo = forgejo_factory(scopes=["read:repository"])
    forgejo.set_ref("main", SHA)
    client = client_for(forgejo, clock)

    assert (
        client.check_access()["permissions"]["push"] is True
    )  # the user's access, not the token's
    with pytest.raises(ForgeAuthError) as caught:
        client.check_write_scope("botserver.yaml")

    assert caught.value.exit_code == 2 and "write:repository" in str(caught.value)
    assert forgejo.runs == []
    (probe,) = forgejo.requests("/dispatches", method="POST")
    assert probe.json["ref"] == "" and probe.status == 403


def test_a_write_token_passes_the_probe_and_nothing_is_dispatched(forgejo, clock):
    forgejo.set_ref("main", SHA)

    client_for(forgejo, clock).check_write_scope("botserver.yaml")

    assert forgejo.runs == []
    assert [e.status for e in forgejo.requests("/dispatches")] == [400]


def test_times_in_the_servers_zone_and_its_unset_epoch(forgejo_factory, clock):
    new_york = timezone(timedelta(hours=-5))
    forgejo = forgejo_factory(zone=new_york, workflows=["botserver.yaml"])
    (run_id,) = forgejo.on_push(SHA, script=Script(waiting_reads=1, running_reads=5))
    client = client_for(forgejo, clock)

    waiting = client.run(run_id)
    running = client.run(run_id)

    (first,) = [e for e in forgejo.requests(f"/runs/{run_id}")][:1]
    assert first.response_json["started"] == "1969-12-31T19:00:00-05:00"
    assert waiting.started is None and waiting.stopped is None
    assert running.started is not None and running.started.utcoffset() == timedelta(0)
    assert abs(running.started - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_a_newer_push_cancels_a_workflow_without_concurrency_and_wait_names_it(
    forgejo_factory, clock
):
    forgejo = forgejo_factory(workflows={"botserver.yaml": GBO_WORKFLOW}, runner_labels=["gbo"])
    (first,) = forgejo.on_push(SHA, script=Script(hold=True))
    (second,) = forgejo.on_push(OTHER_SHA, script=Script(hold=True))
    reporter, _ = capture()

    with pytest.raises(CIRunFailed) as caught:
        wait_for_run(
            client_for(forgejo, clock), first, timeout=60, poll_interval=5, reporter=reporter
        )

    assert caught.value.exit_code == 3
    assert f"run {second} " in str(caught.value) and OTHER_SHA[:12] in str(caught.value)
    assert f"gbdeploy wait {second}" in str(caught.value)


def test_concurrency_with_a_group_and_no_cancel_queues_the_later_run(forgejo_factory):
    forgejo = forgejo_factory(workflows={"botserver.yaml": QUEUEING}, runner_labels=["gbo"])
    (first,) = forgejo.on_push(SHA, script=Script(hold=True))
    (second,) = forgejo.on_push(OTHER_SHA, script=Script(hold=True))

    assert (forgejo.run(first).status, forgejo.run(second).status) == ("waiting", "waiting")
    assert forgejo.run(second).queued and not forgejo.run(first).queued
    forgejo.finish(first, "success")
    assert not forgejo.run(second).queued


def test_cancel_in_progress_false_without_a_group_is_no_limit(forgejo_factory):
    forgejo = forgejo_factory(workflows={"botserver.yaml": UNLIMITED}, runner_labels=["gbo"])
    runs = [forgejo.on_push(sha, script=Script(hold=True))[0] for sha in (SHA, OTHER_SHA)]

    assert [forgejo.run(r).status for r in runs] == ["waiting", "waiting"]


def test_v13_runs_a_queueing_group_side_by_side(forgejo_factory):
    # v13 reads `concurrency:` but has no queue: `cancel-in-progress: false` is no limit there.
    forgejo = forgejo_factory(
        version="13.0.0", workflows={"botserver.yaml": QUEUEING}, runner_labels=["gbo"]
    )
    runs = [forgejo.on_push(sha, script=Script(hold=True))[0] for sha in (SHA, OTHER_SHA)]

    assert [forgejo.run(r).status for r in runs] == ["waiting", "waiting"]
    assert not any(forgejo.run(r).queued for r in runs)  # the runner takes both at once


@pytest.mark.parametrize("version", ["12.0.0", "13.0.0", "14.0.0", "16.0.0"])
def test_runs_are_listed_newest_first_whatever_order_the_server_sends(
    forgejo_factory, capsys, version
):
    # v12-v14 have no ORDER BY on /runs (oldest first in practice); only v15+ sort by id DESC.
    forgejo = forgejo_factory(version=version, workflows=["botserver.yaml"])
    shas = [f"{n:040x}" for n in range(1, 61)]  # more than one page of 50
    for sha in shas:
        forgejo.on_push(sha, script=Script(hold=True))
    settings = settings_with(forgejo, workflow="botserver.yaml")
    reporter, _ = capture()

    runs = run_runs(settings, reporter, component=None, limit=5)

    assert [r.commit_sha for r in runs] == shas[::-1][:5]
    assert (
        latest_run_line(settings, settings.component("botserver")).split(",")[0].endswith("waiting")
    )
    assert shas[-1][:10] in latest_run_line(settings, settings.component("botserver"))


@pytest.mark.parametrize(
    ("version", "said"),
    [
        ("12.0.0", "a push cancels the unfinished run"),
        ("13.0.0", "side by side"),
        ("14.0.0", None),
        ("16.0.0", None),
    ],
)
def test_release_preflight_says_what_the_forge_version_does_to_concurrency(
    forgejo_factory, version, said
):
    from gbdeploy.release import check_ci_ready

    forgejo = forgejo_factory(version=version, workflows=["botserver.yaml"])
    forgejo.set_ref("main", SHA)
    settings = settings_with(forgejo, workflow="botserver.yaml")
    reporter, out = capture()

    with ForgeClient(forgejo.forge_settings()) as client:
        check_ci_ready(client, settings, settings.component("botserver"), reporter, dispatch=False)

    if said is None:
        assert "note: Forgejo" not in out.getvalue()
    else:
        assert f"note: Forgejo {version}" in out.getvalue() and said in out.getvalue()
        assert "v14" in out.getvalue()


def test_a_token_over_plain_http_to_another_machine_is_said_once(capsys, monkeypatch):
    from gbdeploy.forge import transport

    monkeypatch.setattr(transport, "_warned_plain_http", set())
    for url in ("http://alm.example", "http://alm.example", "http://127.0.0.1:3000"):
        ForgeClient(ForgeSettings(url, "GeneralBots", "gb", 5.0, Secret(TOKEN))).close()
    ForgeClient(ForgeSettings("https://alm.example", "GeneralBots", "gb", 5.0, Secret(TOKEN)))
    ForgeClient(ForgeSettings("http://other.example", "GeneralBots", "gb", 5.0, None))

    err = capsys.readouterr().err
    assert err.count("goes in clear over plain http") == 1
    assert "http://alm.example" in err and "forge.ca_file" in err and TOKEN not in err


def test_forge_ca_file_verifies_and_an_unreadable_one_names_the_key(tmp_path):
    missing = ForgeSettings(
        "https://alm.example", "GeneralBots", "gb", 5.0, Secret(TOKEN), str(tmp_path / "no.pem")
    )
    with pytest.raises(ConfigError) as caught:
        ForgeClient(missing)
    assert "forge.ca_file" in str(caught.value)


def test_a_deploy_cancelled_by_a_v12_forge_says_the_forge_ignores_concurrency(
    forgejo_factory, clock
):
    forgejo = forgejo_factory(
        version="12.0.0", workflows={"botserver.yaml": QUEUEING}, runner_labels=["gbo"]
    )
    (first,) = forgejo.on_push(SHA, script=Script(hold=True))
    (second,) = forgejo.on_push(OTHER_SHA, script=Script(hold=True))

    with pytest.raises(CIRunFailed) as caught:
        wait_for_run(
            client_for(forgejo, clock), first, timeout=60, poll_interval=5, reporter=capture()[0]
        )

    assert f"run {second} " in str(caught.value)
    assert "Forgejo 12.0.0" in str(caught.value) and "ignores `concurrency:`" in str(caught.value)
    assert "upgrade Forgejo to v14" in caught.value.hint


def test_before_v13_a_push_cancels_even_a_queueing_workflow(forgejo_factory):
    forgejo = forgejo_factory(
        version="12.0.0", workflows={"botserver.yaml": QUEUEING}, runner_labels=["gbo"]
    )
    (first,) = forgejo.on_push(SHA, script=Script(hold=True))
    forgejo.on_push(OTHER_SHA, script=Script(hold=True))

    assert forgejo.run(first).status == "cancelled"


def test_a_run_no_runner_may_take_is_reported_with_its_label(forgejo_factory, clock):
    forgejo = forgejo_factory(workflows={"botserver.yaml": GBO_WORKFLOW})  # runner: `docker`
    (run_id,) = forgejo.on_push(SHA, script=Script(waiting_reads=0, running_reads=0))
    reporter, out = capture()

    with pytest.raises(WaitTimeout) as caught:
        wait_for_run(
            client_for(forgejo, clock),
            run_id,
            timeout=600,
            poll_interval=5,
            reporter=reporter,
            pickup_timeout=120,
            runner_label="ubuntu-latest",
        )

    assert forgejo.run(run_id).status == "waiting"
    assert "no runner with label gbo has taken it" in out.getvalue()  # the job's own runs-on
    assert "no runner with label gbo has taken it" in str(caught.value)
    assert out.getvalue().count("no runner with label") == 1


@pytest.mark.parametrize(
    ("workflow", "ref", "error", "status"),
    [
        ("nope.yaml", "main", ForgeNotFound, 500),
        ("botserver.yaml", "no-such-branch", ForgeNotFound, 500),
        ("botserver.yaml", "refs/heads/no-such-branch", ForgeNotFound, 404),
        ("broken.yaml", "main", ForgeNotFound, 500),
    ],
)
def test_dispatch_errors_are_forgejos(forgejo_factory, clock, workflow, ref, error, status):
    forgejo = forgejo_factory(
        workflows={"botserver.yaml": GBO_WORKFLOW, "broken.yaml": "jobs: [not, a, mapping]\n"}
    )
    forgejo.set_ref("main", SHA)

    with pytest.raises(error):
        client_for(forgejo, clock).dispatch(workflow, ref)

    assert [e.status for e in forgejo.requests("/dispatches")] == [status]
    assert forgejo.runs == []


def test_a_workflow_without_workflow_dispatch_is_dispatched_anyway(forgejo_factory, clock):
    push_only = GBO_WORKFLOW.replace(", workflow_dispatch: {}", "")
    forgejo = forgejo_factory(workflows={"botserver.yaml": push_only})
    forgejo.set_ref("main", SHA)

    dispatched = client_for(forgejo, clock).dispatch("botserver.yaml", "main")

    assert (
        dispatched is not None and forgejo.run(dispatched.id).trigger_event == "workflow_dispatch"
    )


@pytest.mark.parametrize("words", ["[skip ci]", "[ci skip]", "[no ci]", "[skip actions]"])
def test_a_push_saying_skip_ci_starts_nothing(forgejo, words):
    assert forgejo.on_push(SHA, message=f"Update botserver {words}") == []
    assert forgejo.on_push(OTHER_SHA, message="Update botserver") != []


def test_tasks_fallback_never_dispatches_while_a_run_may_wait_for_a_runner(forgejo_factory, clock):
    forgejo = forgejo_factory(version="11.0.0", workflows={"botserver.yaml": GBO_WORKFLOW})
    forgejo.set_ref("main", SHA)
    (run_id,) = forgejo.on_push(SHA, script=Script())  # runs-on gbo, runner has `docker`
    reporter, _ = capture()

    with pytest.raises(WaitTimeout) as caught:
        find_run(
            client_for(forgejo, clock),
            SHA,
            "botserver.yaml",
            appear_timeout=60,
            dispatch=False,
            ref="main",
            reporter=reporter,
        )

    assert "not dispatching" in str(caught.value)
    assert forgejo.requests("/dispatches") == []
    assert forgejo.run(run_id).status == "waiting"
    assert all(not e.response_json["workflow_runs"] for e in forgejo.requests("/actions/tasks"))


def test_the_job_token_reaches_only_its_own_and_public_repositories(forgejo):
    forgejo.add_repository("GeneralBots", "BotServer", private=True)
    forgejo.add_repository("GeneralBots", "botlib", private=False)
    (run_id, _) = forgejo.on_push(SHA)

    assert forgejo.job_token_may_read(run_id, "GeneralBots/gb")
    assert forgejo.job_token_may_read(run_id, "GeneralBots/botlib")
    assert not forgejo.job_token_may_read(run_id, "GeneralBots/BotServer")


HOSTILE_RUNS = [
    {"workflow_runs": [{"id": 10**30, "duration": 10**30, "started": "9999-99-99T99:99:99Z"}]},
    {"workflow_runs": [{"id": "12", "status": 5, "started": "2026-01-01T00:00:00+99:00"}]},
    {"workflow_runs": "many", "total_count": "lots"},
    {"workflow_runs": 7},
    [1, 2, 3],
    "just a string",
]


@pytest.mark.parametrize("answer", HOSTILE_RUNS)
def test_hostile_run_lists_never_raise_anything_but_gbdeploy_errors(answer):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    settings = ForgeSettings("http://127.0.0.1:9", "GeneralBots", "gb", 5.0, Secret(TOKEN))
    client = ForgeClient(settings, transport=httpx.MockTransport(handler))
    try:
        page = client.runs()
    except GbdeployError as error:
        assert "not the object Forgejo's API sends" in str(error)
    else:
        for run in page.runs:
            assert run.duration is None and run.started is None
            assert isinstance(run.id, int) and run.id < 2**63


def test_hostile_answers_through_the_cli_are_a_message_not_a_traceback(
    tmp_path, monkeypatch, capsys, mocker
):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/runs"):
            return httpx.Response(
                200, text="<html>Sign in</html>", headers={"Content-Type": "text/html"}
            )
        return httpx.Response(200, json={"id": 1, "duration": 10**30, "status": {"x": 1}})

    real_client = httpx.Client

    def client_with_handler(*args, **kwargs):
        kwargs["transport"] = httpx.MockTransport(handler)
        return real_client(*args, **kwargs)

    mocker.patch("gbdeploy.forge.transport.httpx.Client", side_effect=client_with_handler)
    (tmp_path / "gbdeploy.yaml").write_text("forge: {url: 'http://127.0.0.1:9'}\n")
    monkeypatch.chdir(tmp_path)

    code, out, err = gbdeploy("runs", capsys=capsys)

    assert code == 1
    assert "not Forgejo's API (text/html)" in err and "Traceback" not in out + err


# ---------------------------------------------------------------------------- workflow placement


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("../BotServer.git", ("GeneralBots", "BotServer")),
        ("./botlib", ("gb", "botlib")),
        ("../../Other/botui.git", ("Other", "botui")),
        ("https://alm.example/GeneralBots/BotServer.git", ("GeneralBots", "BotServer")),
        ("ssh://git@alm.example:2222/GeneralBots/botui.git", ("GeneralBots", "botui")),
        ("git@alm.example:GeneralBots/BotServer.git", ("GeneralBots", "BotServer")),
    ],
)
def test_a_submodule_url_names_its_repository_on_the_forge(url, expected):
    forge = ForgeSettings("http://alm.example", "GeneralBots", "gb")

    assert repository_of_url(url, forge) == expected


def test_a_url_without_owner_and_name_is_a_clear_error():
    with pytest.raises(UsageError, match="cannot tell the forge repository"):
        repository_of_url("https://alm.example/lonely.git", ForgeSettings("http://x", "o", "r"))


def settings_with(forgejo, **component: object) -> Settings:
    return Settings.from_mapping(
        {
            **DEFAULTS,
            "forge": {"url": forgejo.url, "owner": "GeneralBots", "repo": "gb", "timeout": 5},
            "release": {"poll_interval": 0.01, "timeout": 30, "appear_timeout": 30},
            "components": {
                "botserver": {**DEFAULTS["components"]["botserver"], **component},
                "botui": {"enabled": False},
            },
        }
    )


def test_workflow_repo_must_be_root_component_or_owner_slash_repo(forgejo):
    with pytest.raises(ConfigError, match=r"components\.botserver\.workflow_repo"):
        settings_with(forgejo, workflow_repo="somewhere else")
    settings = settings_with(forgejo, workflow_repo="generalbots/GB")
    assert workflow_home(settings, settings.component("botserver"), None).placement == "root"


def test_runs_wait_and_status_follow_the_component_repository(forgejo, capsys):
    forgejo.add_repository("GeneralBots", "BotServer", workflows=["botserver.yaml"])
    forgejo.on_push(OTHER_SHA)  # a root run: not this component's
    (run_id,) = forgejo.on_push(SHA, repo="GeneralBots/BotServer")
    settings = settings_with(forgejo, workflow_repo="GeneralBots/BotServer")
    reporter, out = capture()

    listed = run_runs(settings, reporter, component="botserver", limit=5, as_json=True)
    waited = run_wait(settings, reporter, run_id=None, sha=SHA, timeout=30, sleep=lambda s: None)
    line = latest_run_line(settings, settings.component("botserver"))

    assert [r.id for r in listed] == [run_id]
    assert json.loads(out.getvalue().split("\nrun ")[0])[0]["commit_sha"] == SHA
    assert [r.id for r in waited] == [run_id] and waited[0].succeeded
    assert f"run {run_id} botserver.yaml (#1 in the web UI): success, commit {SHA[:10]}" in line
    assert line.endswith("in GeneralBots/BotServer")
    assert forgejo.requests("/repos/GeneralBots/BotServer/actions/runs")


def test_a_group_without_cancel_in_progress_cancels_on_push_but_not_on_dispatch(forgejo_factory):
    per_ref = GBO_WORKFLOW + "concurrency: {group: '${{ github.workflow }}-${{ github.ref }}'}\n"
    forgejo = forgejo_factory(workflows={"botserver.yaml": per_ref}, runner_labels=["gbo"])
    forgejo.set_ref("main", OTHER_SHA)
    (on_dev,) = forgejo.on_push(SHA, ref="refs/heads/dev", script=Script(hold=True))
    (first,) = forgejo.on_push(SHA, script=Script(hold=True))
    dispatched = ForgeClient(forgejo.forge_settings()).dispatch("botserver.yaml", "main")
    assert dispatched is not None
    assert forgejo.run(first).status == "waiting"  # a dispatch without cancel-in-progress: no limit
    (second,) = forgejo.on_push(OTHER_SHA, script=Script(hold=True))

    assert forgejo.run(on_dev).status == "waiting"  # another ref: another group
    assert forgejo.run(first).status == "cancelled" and forgejo.run(first).cancelled_by == second
    assert forgejo.run(dispatched.id).status == "cancelled"  # same group, whatever started it


def test_skip_strings_are_matched_as_forgejo_does_case_and_all(forgejo):
    assert forgejo.on_push(SHA, message="Release [SKIP CI]") != []
    assert forgejo.on_push(OTHER_SHA, title="[skip ci] in the title only") != []


@pytest.mark.parametrize(
    "answer",
    [
        {"id": 1, "status": ["success"], "duration": 10**30, "started": 5, "stopped": None},
        {"id": True, "status": "success\x00", "index_in_repo": -3, "duration": "1s"},
        {"id": 1, "status": "running", "started": "1969-12-31T19:00:00-05:00", "duration": 1e300},
    ],
)
def test_waiting_on_a_hostile_run_ends_in_a_timeout_not_a_traceback(answer, clock):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    settings = ForgeSettings("http://127.0.0.1:9", "GeneralBots", "gb", 5.0, Secret(TOKEN))
    client = ForgeClient(
        settings, transport=httpx.MockTransport(handler), sleep=clock.sleep, clock=clock
    )
    reporter, _ = capture()

    with pytest.raises(WaitTimeout) as caught:
        wait_for_run(client, 1, timeout=60, poll_interval=5, reporter=reporter)

    assert caught.value.exit_code == 4


def test_wait_for_a_run_id_finds_it_in_the_component_repository(forgejo):
    forgejo.add_repository("GeneralBots", "BotServer", workflows=["botserver.yaml"])
    (run_id,) = forgejo.on_push(SHA, repo="GeneralBots/BotServer")
    settings = settings_with(forgejo, workflow_repo="GeneralBots/BotServer")
    reporter, _ = capture()

    (run,) = run_wait(settings, reporter, run_id=run_id, sha=None, timeout=30, sleep=lambda s: None)

    assert run.id == run_id and run.succeeded
    assert [e.status for e in forgejo.requests(f"/gb/actions/runs/{run_id}")] == [404]
    with pytest.raises(ForgeNotFound, match="no run with id 99999"):
        run_wait(settings, reporter, run_id=99999, sha=None, timeout=30, sleep=lambda s: None)


def test_a_server_requiring_sign_in_answers_403_to_no_token(forgejo_factory, clock):
    forgejo = forgejo_factory(private=False, require_signin=True)

    with pytest.raises(ForgeAuthError) as caught:
        client_for(forgejo, clock, token="").check_access()

    assert "without a token" in str(caught.value) and "requires sign-in" in str(caught.value)
    assert [e.status for e in forgejo.exchanges] == [403]


def test_a_servers_text_cannot_drive_the_terminal(forgejo, clock):
    (run_id,) = forgejo.on_push(
        SHA,
        workflows=["botserver.yaml"],
        title="Update \x1b]0;pwned\x07botserver\x1b[2J",
        script=Script(
            "failure", waiting_reads=0, running_reads=0, log="\x1b[31merror\x1b[0m: boom\x1b[2J\n"
        ),
    )
    reporter, _ = capture()
    client = client_for(forgejo, clock)

    assert client.run(run_id).title == "Update botserver"
    with pytest.raises(CIRunFailed) as caught:
        wait_for_run(client, run_id, timeout=60, poll_interval=5, reporter=reporter)

    assert "| error: boom" in str(caught.value) and "\x1b" not in str(caught.value)
