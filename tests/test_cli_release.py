"""`release` through the whole sandbox (sshd, git remotes, the Forgejo emulator, the emulated
runner running the rendered workflow): what the operator is told after it, and what the deploy
record keeps of who released and which CI run deployed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_release_e2e import developer_commit, health, make_sandbox

pytestmark = pytest.mark.slow


@pytest.fixture
def sandbox(gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch, forgejo_schema) -> Iterator:
    yield from make_sandbox("root", monkeypatch, forgejo_schema)


def test_after_a_failed_ci_run_the_hint_verifies_what_still_runs(sandbox, run_gbdeploy):
    before = health(sandbox)["commit"]
    developer_commit(sandbox, "Break the build", **{"service.c": "this is not C\n"})

    result = run_gbdeploy("release", "botserver")

    assert result.code == 3, result.text
    assert f"gbdeploy verify botserver --commit {before}" in result.err
    assert run_gbdeploy("verify", "botserver", "--commit", before).code == 0
