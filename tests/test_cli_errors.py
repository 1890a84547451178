"""No traceback ever reaches a user: hostile config, hostile environment, a hostile forge and our
own bugs, each through the real `gbdeploy` program (in-process, and as a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import TEST_TOKEN

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", TEST_TOKEN)
    return directory


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.text
    assert 'File "' not in result.text
    assert TEST_TOKEN not in result.text


def assert_clean(result, *, code: int) -> None:
    """What a user reads: one `gbdeploy: …` message with the exit code, no traceback, no token."""
    assert result.code == code, result.text
    assert_no_traceback(result)
    assert "gbdeploy: error:" in result.err or "gbdeploy: internal error:" in result.err


# --- our own bugs ---------------------------------------------------------------------------------


def test_an_unexpected_exception_is_reported_as_a_bug_with_exit_1(
    project: Path, run_gbdeploy, mocker
):
    mocker.patch("gbdeploy.runs.run_runs", side_effect=KeyError(f"state for token {TEST_TOKEN}"))

    result = run_gbdeploy("runs")

    assert_clean(result, code=1)
    assert "gbdeploy: internal error: KeyError:" in result.err
    assert "this is a bug in gbdeploy" in result.err
    assert "GBDEPLOY_DEBUG=1" in result.err
    assert "token ***" in result.err


def test_gbdeploy_debug_shows_the_traceback_still_without_the_token(
    project: Path, run_gbdeploy, mocker, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GBDEPLOY_DEBUG", "1")
    mocker.patch("gbdeploy.runs.run_runs", side_effect=RuntimeError(f"broke near {TEST_TOKEN!r}"))

    result = run_gbdeploy("runs")

    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert "RuntimeError: broke near '***'" in result.err
    assert TEST_TOKEN not in result.text


def test_an_internal_error_hides_a_token_also_where_its_message_escapes_it(
    project: Path, run_gbdeploy, mocker, monkeypatch: pytest.MonkeyPatch
):
    """A KeyError's message is the repr of its argument: a backslash in the token is doubled."""
    token = "gbd\\token-with-a-backslash"
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", token)
    mocker.patch("gbdeploy.runs.run_runs", side_effect=KeyError(f"state for token {token}"))

    result = run_gbdeploy("runs")

    assert result.code == 1
    assert "token ***" in result.err
    assert "with-a-backslash" not in result.text


def test_an_exception_outside_any_command_is_reported_as_a_bug(project: Path, run_gbdeploy, mocker):
    """Before a task runs (config creation): the program itself catches it."""
    mocker.patch("gbdeploy.config_layers.find_project_dir", side_effect=OSError("disk on fire"))

    result = run_gbdeploy("status")

    assert_clean(result, code=1)
    assert "internal error: OSError: disk on fire" in result.err


# --- hostile config and command lines, in a real process ------------------------------------


HOSTILE_CONFIGS = [
    "- forge\n- git\n",
    "components: {botserver: {health: '127.0.0.1:5858/health'}}\n",
    "components: {botserver: {health: 'ftp://localhost:21/'}}\n",
    "components: {botserver: {stop_timeout: -5}}\n",
    "components: {botserver: {user: 123}}\n",
    "components: {botserver: {binary: /}}\n",
    "components: {'x$(touch pwned)y': {binary: /opt/x}}\n",
    "release: {timeout: .inf}\n",
    "forge: {url: 'http://[::1'}\n",
    "git: [\n",
    "\x00\x01\x02",
]


@pytest.mark.slow  # a gbdeploy process each
@pytest.mark.parametrize("text", HOSTILE_CONFIGS)
@pytest.mark.parametrize("command", [["status", "botserver"], ["deploy", "botserver"], ["runs"]])
def test_hostile_config_exits_2_at_load_in_a_real_process(
    project: Path, text: str, command: list[str]
):
    (project / "gbdeploy.yaml").write_text(text)

    completed = subprocess.run(
        [sys.executable, "-m", "gbdeploy", *command],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output
    assert "Traceback" not in output
    assert completed.stderr.startswith("gbdeploy: error: config: ")
    assert not (project / "pwned").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("wait", "--run-id", "1e400"),
        ("wait", "--run-id", "99999999999999999999999999"),
        ("wait", "--run-id", "7", "--timeout", "nan"),
        ("wait", "--run-id", "7", "--timeout", "-1"),
        ("release", "botserver", "--timeout", "inf"),
        ("runs", "--limit", "abc"),
        ("maintain", "--dry-run", "--max-size-gb", "inf"),
    ],
)
def test_hostile_numbers_on_the_command_line_exit_2(project: Path, run_gbdeploy, args):
    result = run_gbdeploy(*args)
    assert_clean(result, code=2)


# --- a hostile forge ---------------------------------------------------------------------------


class HostileForge(ThreadingHTTPServer):
    """Answers every GET with `status`, `content_type` and `body`, whatever was asked."""

    daemon_threads = True

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        self.answer = (status, content_type, body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HostileHandler(BaseHTTPRequestHandler):
    server: HostileForge

    def do_GET(self) -> None:
        status, content_type, body = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def _run(**fields: object) -> dict[str, object]:
    run: dict[str, object] = {
        "id": 7,
        "index_in_repo": 7,
        "status": "running",
        "commit_sha": "a" * 40,
        "event": "push",
        "trigger_event": "push",
        "workflow_id": "botserver.yaml",
        "prettyref": "main",
        "title": "t",
        "html_url": "http://127.0.0.1/x",
        "started": "2026-01-01T00:00:00Z",
        "stopped": "1970-01-01T00:00:00Z",
        "created": "2026-01-01T00:00:00Z",
        "updated": "2026-01-01T00:00:00Z",
        "duration": 1,
    }
    run.update(fields)
    return run


HOSTILE_ANSWERS = {
    "html": (200, "text/html", b"<html><body>Sign in</body></html>"),
    "truncated-json": (200, "application/json", b'{"workflow_runs": [{"id": '),
    "json-list": (200, "application/json", b"[1, 2, 3]"),
    "runs-not-a-list": (200, "application/json", b'{"workflow_runs": "x", "total_count": 1}'),
    "huge-numbers": (
        200,
        "application/json",
        json.dumps(
            {
                "workflow_runs": [_run(id=10**30, duration=10**30, index_in_repo=10**30)],
                "total_count": 10**30,
                **_run(id=10**30, duration=10**30),
            }
        ).encode(),
    ),
    "wrong-types": (
        200,
        "application/json",
        json.dumps(
            {
                "workflow_runs": [_run(id="seven", status=["x"], started=5, duration="long")],
                "total_count": "many",
                **_run(id="seven", status=None, started="yesterday"),
            }
        ).encode(),
    ),
    "error-html": (502, "text/html", b"<html>Bad Gateway</html>"),
}


# A 502 is retried as a gateway error, on the real clock: seconds.
@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.slow) if name == "error-html" else name
        for name in sorted(HOSTILE_ANSWERS)
    ]
)
def hostile_forge(request: pytest.FixtureRequest) -> Iterator[HostileForge]:
    server = HostileForge(*HOSTILE_ANSWERS[request.param])
    # shutdown() waits for the loop's next poll: 0.05 s, not the default half second
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "args",
    [
        ("runs",),
        # waits out its 2 s timeout on the real clock
        pytest.param(("wait", "--run-id", "7", "--timeout", "2"), marks=pytest.mark.slow),
    ],
)
def test_a_hostile_forge_answer_never_shows_a_traceback(
    project: Path, run_gbdeploy, hostile_forge: HostileForge, args
):
    (project / "gbdeploy.yaml").write_text(
        f"forge: {{url: '{hostile_forge.url}', timeout: 2}}\n"
        "release: {poll_interval: 0.05, appear_timeout: 1}\n"
    )

    result = run_gbdeploy(*args)

    assert_no_traceback(result)
    if result.code != 0:
        assert result.err.startswith("gbdeploy: error:"), result.err  # the server, not a bug
