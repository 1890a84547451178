"""What gbdeploy points the user to next, through the real command line against the Forgejo
emulator: `wait` by the web UI's run number, and the hints after a failed CI run."""

from __future__ import annotations

from pathlib import Path

import pytest

from gbdeploy.program import help_first, optional_positionals

TOKEN = "emulator-token-0123456789"
SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


@pytest.fixture
def gbdeploy(run_gbdeploy):
    """As `gbdeploy` runs from a shell: through main()'s rewriting of the command line."""

    def run(*args: str):
        return run_gbdeploy(*optional_positionals(help_first(["gbdeploy", *args]))[1:])

    return run


@pytest.fixture
def project(forgejo, tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "gbdeploy.yaml").write_text(
        f"forge: {{url: '{forgejo.url}', owner: GeneralBots, repo: gb, timeout: 5}}\n"
        "release: {poll_interval: 0.01, timeout: 30}\n"
    )
    monkeypatch.chdir(directory)
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", TOKEN)
    return directory


def test_wait_with_the_web_uis_run_number_finds_that_run_and_says_so(forgejo, project, gbdeploy):
    (run_id,) = forgejo.on_push(SHA, workflows=["botserver.yaml"])
    assert run_id != 1  # the API id is not the web UI's #1
    forgejo.finish(run_id, "success")

    result = gbdeploy("wait", "1")

    assert result.code == 0, result.text
    assert f"run #1 (its number in the web UI) of GeneralBots/gb is run id {run_id}" in result.out
