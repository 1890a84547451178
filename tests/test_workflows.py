"""Rendered and committed Forgejo workflows: actionlint-clean, with triggers, build and deploy."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from gbdeploy.config import DEFAULTS, Settings
from gbdeploy.errors import ConfigError, UsageError
from gbdeploy.install_lock import pinned_install
from gbdeploy.output import Reporter
from gbdeploy.workflow_secrets import secret_exposures
from gbdeploy.workflows import component_files, render_workflow, rendered_files, run_workflows
from tests.test_runner import checkout as root_checkout  # noqa: F401 (a fixture)
from tests.test_runner import git, stub_gbdeploy  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / ".forgejo" / "workflows").glob("*.y*ml"))


def actionlint() -> str:
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint not found (installed by .ci/setup from .ci/lint-tools.txt)")
    return found


def shellcheck() -> str:
    found = shutil.which("shellcheck")
    if not found:
        pytest.fail("shellcheck not found (Debian's shellcheck, installed by .ci/setup)")
    return found


def lint(
    path: Path, labels: tuple[str, ...] = ("gbo", "docker")
) -> subprocess.CompletedProcess[str]:
    # The runner labels are custom (self-hosted) labels, declared to actionlint as such.
    config = path.parent / f".actionlint-{path.stem}.yaml"
    config.write_text(yaml.safe_dump({"self-hosted-runner": {"labels": list(labels)}}))
    try:
        # shellcheck named explicitly: actionlint silently skips the `run:` shell without one.
        return subprocess.run(
            [
                actionlint(),
                "-no-color",
                "-shellcheck",
                shellcheck(),
                "-config-file",
                str(config),
                path,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        config.unlink()


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


def component_settings(**workflows: str) -> Settings:
    components = {
        **DEFAULTS["components"],
        "botui": {**DEFAULTS["components"]["botui"], "workflow_repo": "component"},
    }
    return Settings.from_mapping(
        {**DEFAULTS, "components": components, "workflows": {**DEFAULTS["workflows"], **workflows}}
    )


@pytest.mark.slow  # actionlint
@pytest.mark.parametrize(
    "make",
    [default_settings, systemd_settings, component_settings],
    ids=["default", "systemd", "component"],
)
def test_every_rendered_workflow_passes_actionlint(make, tmp_path):
    run_workflows(make(), Reporter(stream=io.StringIO()), out=tmp_path)
    files = sorted(tmp_path.rglob("*.yaml"))
    assert len(files) >= 2
    for path in files:
        result = lint(path)
        assert result.returncode == 0, f"{path.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.slow  # actionlint
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


@pytest.mark.slow  # actionlint
def test_actionlint_is_a_real_check(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ secrets }}\n        uses: actions/checkout@v4\n"
    )
    assert lint(broken).returncode != 0


def test_actionlint_checks_the_run_shell_with_shellcheck(tmp_path):
    unquoted = tmp_path / "unquoted.yaml"
    unquoted.write_text(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - shell: bash\n        run: |\n          x=$1\n          rm -rf $x/\n"
    )
    result = lint(unquoted)
    assert result.returncode != 0 and "SC2086" in result.stdout


def run_blocks(text: str) -> list[tuple[str, str]]:
    """(job/step, the `run:` shell) of each step of a workflow."""
    data = yaml.safe_load(text)
    return [
        (f"{job}/{step.get('name', index)}", step["run"])
        for job, body in data["jobs"].items()
        for index, step in enumerate(body.get("steps", []))
        if "run" in step
    ]


EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.S)


@pytest.mark.parametrize(
    "make",
    [default_settings, systemd_settings, component_settings],
    ids=["default", "systemd", "component"],
)
def test_the_run_shell_of_every_rendered_workflow_passes_shellcheck(make):
    # Each step runs as `bash --noprofile --norc -eo pipefail` (`shell: bash`); an expression
    # `${{ … }}` is replaced by the runner before bash reads it, here by a plain word.
    blocks = [
        (f"{name}: {where}", script)
        for name, text in rendered_files(make()).items()
        if name.endswith((".yaml", ".yml"))
        for where, script in run_blocks(text)
    ]
    assert blocks
    for where, script in blocks:
        text = "set -eo pipefail\n" + EXPRESSION.sub("EXPRESSION", script)
        checked = subprocess.run(
            [shellcheck(), "--shell=bash", "--severity=style", "-"],
            input=text,
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, f"{where}:\n{checked.stdout}{checked.stderr}"


def test_component_workflow_triggers_build_and_deploy():
    text = render_workflow(systemd_settings(), "chat")
    data = yaml.safe_load(text)
    on = data[True]
    assert on["push"] == {"branches": ["release"], "paths": ["apps/chat", "apps/chat/**"]}
    assert on["workflow_dispatch"]["inputs"]["strategy"]["options"] == ["staged", "seed"]
    job = data["jobs"]["deploy"]
    checkout, fetch, build, _install, ssh, deploy = job["steps"]
    assert checkout["uses"] == "actions/checkout@v4"
    assert "with" not in checkout  # no other submodule is fetched, and the job token is used
    assert fetch["env"]["GBDEPLOY_FETCH"] == "apps/chat"  # its siblings: none
    assert job["env"]["GBDEPLOY_SUBMODULE"] == "apps/chat"  # built in its persistent tree
    assert 'BOTSERVER_COMMIT="$(git rev-parse --short HEAD)"' in build["run"]
    assert "export BOTSERVER_COMMIT" in build["run"]
    assert "cargo build --release -p chat\ncargo test -p chat --release\n" in build["run"]
    assert ssh["env"]["DEPLOY_SSH_KEY"] == "${{ secrets.DEPLOY_SSH_KEY }}"
    assert "umask 077" in ssh["run"]
    assert job["env"]["GBDEPLOY_BUILD_DIR"] == "apps/chat"
    assert job["env"]["GBDEPLOY_ARTIFACT"] == "apps/chat/target/release/chat"
    assert 'COMMIT="$(git -C "$GBDEPLOY_BUILD_DIR" rev-parse HEAD)"' in deploy["run"]
    assert (
        'gbdeploy deploy "$GBDEPLOY_COMPONENT" --artifact "$artifact"'
        ' --commit "$COMMIT" --strategy "${STRATEGY:-staged}" --yes'
    ) in deploy["run"]


def test_the_default_workflow_runs_on_the_real_forge_and_runner():
    data = yaml.safe_load(render_workflow(default_settings(), "botserver"))
    # A later push queues behind a deploy in progress; without `group`, `false` means no limit.
    assert data["concurrency"] == {
        "group": "gbdeploy-deploy-botserver",
        "cancel-in-progress": False,
    }
    job = data["jobs"]["deploy"]
    assert job["runs-on"] == "gbo"  # the real runner's label (forgejo-runner's default is docker)
    assert {k: job["env"][k] for k in ("CARGO_TARGET_DIR", "SCCACHE_DIR", "CARGO_HOME")} == {
        "CARGO_TARGET_DIR": "/opt/gbo/ci/botserver/target",
        "SCCACHE_DIR": "/opt/gbo/cache/sccache",
        "CARGO_HOME": "/opt/gbo/cache/cargo",
    }
    assert job["env"]["GBDEPLOY_LOGS_DIR"] == "/opt/gbo/logs"
    build = job["steps"][2]["run"]
    assert "$(date -u +%Y%m%dT%H%M%SZ)" in build and 'tee "$log"' in build
    install = job["steps"][3]
    # By default the wheel and hash lock that `gbdeploy workflows` writes beside the workflows:
    # nothing has to be published anywhere for the first job to install gbdeploy.
    assert install["env"]["GBDEPLOY_INSTALL"] == ".forgejo/gbdeploy/requirements.txt"
    maintenance = yaml.safe_load(rendered_files(default_settings())["runner-maintenance.yaml"])
    env = maintenance["jobs"]["maintain"]["env"]
    for scope in (job["env"], env):  # every step runs on a PTY: no fetch may ask anything
        assert scope["GIT_TERMINAL_PROMPT"] == "0" and scope["GIT_ASKPASS"] == ""


def test_private_submodules_are_checked_out_with_the_named_secret_never_a_token():
    chosen = Settings.from_mapping({**DEFAULTS, "workflows": {"submodules_secret": "GB_READ"}})
    text = render_workflow(chosen, "botserver")
    checkout = yaml.safe_load(text)["jobs"]["deploy"]["steps"][0]
    assert checkout["with"] == {"token": "${{ secrets.GB_READ }}"}
    assert secret_exposures(text) == []


def test_a_pointer_change_matches_the_paths_filter():
    from gbdeploy_sandbox.runner import is_triggered

    text = render_workflow(default_settings(), "botserver")
    assert is_triggered(text, "push", changed_paths=["botserver"])  # what diff-tree lists
    assert is_triggered(text, "push", changed_paths=["botserver/src/main.rs"])
    assert not is_triggered(text, "push", changed_paths=["botui", "botserverx"])


def test_the_pin_follows_the_vcs_commit_gbdeploy_was_installed_from(mocker):
    commit = "0123456789abcdef0123456789abcdef01234567"
    direct_url = json.dumps(
        {
            "url": "https://forge.example/me/gbdeploy.git",
            "vcs_info": {"vcs": "git", "commit_id": commit},
        }
    )
    distribution = mocker.patch("importlib.metadata.distribution")
    distribution.return_value.read_text.return_value = direct_url
    chosen = Settings.from_mapping(
        {**DEFAULTS, "workflows": {"source": "https://git.example/gb/gbdeploy.git"}}
    )
    assert pinned_install(chosen).requirement == (
        f"gbdeploy @ git+https://git.example/gb/gbdeploy.git@{commit}"
    )


@pytest.mark.parametrize(
    "install",
    [
        "gbdeploy",
        "gbdeploy==0.1.0",
        "git+https://forge.example/gb/gbdeploy.git",
        "git+https://forge.example/gb/gbdeploy.git@main",
        "git+https://forge.example/gb/gbdeploy.git@v0.1.0",
        "git+https://forge.example/gb/gbdeploy.git@2351643",
        "dist/gbdeploy-0.1.0-py3-none-any.whl",
        "https://evil.example/gbdeploy.whl#sha256=" + "a" * 64,
        "../gbdeploy.whl#sha256=" + "a" * 64,
    ],
)
def test_an_unpinned_install_is_refused_with_exit_2(
    install, tmp_path, gbdeploy_env, run_gbdeploy, monkeypatch
):
    (tmp_path / "gbdeploy.yaml").write_text(yaml.safe_dump({"workflows": {"install": install}}))
    monkeypatch.chdir(tmp_path)
    result = run_gbdeploy("workflows", "--out", str(tmp_path / "out"))
    assert result.code == 2
    assert "workflows.install" in result.err and "not a pinned source" in result.err
    assert "Traceback" not in result.text
    assert not (tmp_path / "out").exists()  # nothing written


def test_pinned_sources_render(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    for install in (
        f"git+https://forge.example/gb/gbdeploy.git@{commit}",
        f"gbdeploy @ git+ssh://git@forge.example/gb/gbdeploy.git@{commit}",
        "ci/gbdeploy-0.1.0-py3-none-any.whl#sha256=" + "b" * 64,
    ):
        settings = Settings.from_mapping({**DEFAULTS, "workflows": {"install": install}})
        data = yaml.safe_load(render_workflow(settings, "botui"))
        env = data["jobs"]["deploy"]["steps"][3]["env"]
        assert env["GBDEPLOY_INSTALL"] == install.split("#")[0]


def run_install_step(text: str, workspace: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    step = yaml.safe_load(text)["jobs"]["deploy"]["steps"][3]
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=workspace,
        env={**step["env"], "HOME": str(workspace), "PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_pinned_file_with_another_hash_is_never_installed(tmp_path):
    wheel = tmp_path / "ci" / "gbdeploy-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"the reviewed wheel")
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    settings = Settings.from_mapping(
        {**DEFAULTS, "workflows": {"install": f"ci/{wheel.name}#sha256={good}"}}
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "python3-called"
    fake = bin_dir / "python3"  # records that an install began; creates nothing
    fake.write_text(f'#!/bin/sh\necho "$@" >> {record}\nexit 1\n')
    fake.chmod(0o755)
    text = render_workflow(settings, "botui")

    lock = tmp_path / ".forgejo" / "gbdeploy" / "requirements.txt"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    wheel.write_bytes(b"a wheel someone swapped in")
    result = run_install_step(text, tmp_path, bin_dir)
    assert result.returncode == 1
    assert "does not have the sha256 of workflows.install" in result.stderr
    assert not record.exists()  # pip never saw it

    wheel.write_bytes(b"the reviewed wheel")
    result = run_install_step(text, tmp_path, bin_dir)
    assert record.read_text().startswith("-m venv")  # the hash matched: installing began


def test_secrets_are_never_echoed_by_the_rendered_text():
    for make in (default_settings, systemd_settings, component_settings):
        for text in rendered_files(make()).values():
            assert secret_exposures(text) == []
            assert "set -x" not in text
            for line in text.splitlines():
                if "secrets." in line:  # secrets only reach steps through env:, never a script
                    assert line.strip().startswith(("DEPLOY_SSH_KEY:", "DEPLOY_KNOWN_HOSTS:"))


SSH_WRITE = 'printf \'%s\\n\' "$DEPLOY_SSH_KEY" > "${RUNNER_TEMP:-$HOME}/gbdeploy-ssh/deploy_key"'


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("umask 077", 'umask 077\ncat "${RUNNER_TEMP:-$HOME}/gbdeploy-ssh/deploy_key"'),
        ("umask 077", "umask 077\nset -x"),
        ("umask 077", "set -o xtrace; umask 077"),
        ("umask 077", "umask 077\necho $DEPLOY_SSH_KEY"),
        ("umask 077", 'umask 077\necho "key: ${DEPLOY_KNOWN_HOSTS}" >&2'),
        ("umask 077", "umask 077\nenv"),
        (SSH_WRITE, SSH_WRITE.replace(" > ", " | tee ")),
        (SSH_WRITE, 'printf %s "${{ secrets.DEPLOY_SSH_KEY }}" > /tmp/k'),
        ("trap ", 'base64 "$GBDEPLOY_SSH_IDENTITY_FILE"\ntrap '),
    ],
    ids=["cat-key", "set-x", "xtrace", "echo", "stderr", "env", "tee", "interpolated", "base64"],
)
def test_the_secret_check_catches_a_step_that_prints_a_secret(old, new):
    text = render_workflow(default_settings(), "botserver")
    assert old in text
    broken = text.replace(old, new.replace("\n", "\n          "), 1)
    assert secret_exposures(broken), new


def test_a_build_that_would_print_the_key_is_refused():
    component = {
        **DEFAULTS["components"]["botserver"],
        "build": 'cargo build\ncat "${RUNNER_TEMP:-$HOME}/gbdeploy-ssh/deploy_key"',
    }
    settings = Settings.from_mapping({**DEFAULTS, "components": {"botserver": component}})
    with pytest.raises(ConfigError, match=r"components\.botserver\.build.*could print a secret"):
        render_workflow(settings, "botserver")


def test_runs_on_comes_from_config():
    commit = "0123456789abcdef0123456789abcdef01234567"
    install = f"git+https://forge.example/gb/gbdeploy.git@{commit}"
    settings = Settings.from_mapping(
        {**DEFAULTS, "workflows": {"runs_on": "self-hosted", "install": install}}
    )
    data = yaml.safe_load(render_workflow(settings, "botui"))
    assert data["jobs"]["deploy"]["runs-on"] == "self-hosted"


@pytest.mark.slow  # pip download locks the dependencies
def test_the_component_placement_renders_the_file_for_the_component_repository(tmp_path):
    settings = component_settings()
    data = yaml.safe_load(render_workflow(settings, "botui"))
    assert data[True]["push"] == {"branches": ["main"]}  # any push to its main: no paths filter
    job = data["jobs"]["deploy"]
    checkout, build = job["steps"][:2]
    assert "with" not in checkout and "working-directory" not in build
    assert job["env"]["GBDEPLOY_ARTIFACT"] == "target/release/botui"
    assert job["env"]["GBDEPLOY_BUILD_DIR"] == "."
    assert data["concurrency"]["group"] == "gbdeploy-deploy-botui"

    project = tmp_path / "gb"
    project.mkdir()
    (project / "gbdeploy.yaml").write_text("components:\n  botui: {workflow_repo: component}\n")
    settings = dataclasses.replace(settings, project_dir=project)
    out = io.StringIO()
    run_workflows(settings, Reporter(stream=out))
    assert (project / "botui" / ".forgejo" / "workflows" / "botui.yaml").is_file()
    assert (project / "botui" / "gbdeploy.yaml").read_text() == (
        project / "gbdeploy.yaml"
    ).read_text()
    assert not (project / ".forgejo" / "workflows" / "botui.yaml").exists()
    assert "in the repository of submodule botui" in out.getvalue()


def test_the_root_repository_named_in_another_case_gets_the_root_workflow():
    """Forgejo's owner and repository names ignore case, and so does `release` when it decides
    which push starts the run: the file goes where release expects it, in the root repository
    with its `paths` filter, not into the submodule."""
    component = {**DEFAULTS["components"]["botserver"], "workflow_repo": "generalbots/GB"}
    settings = Settings.from_mapping({**DEFAULTS, "components": {"botserver": component}})

    assert "botserver.yaml" in rendered_files(settings)
    assert component_files(settings) == {}
    on = yaml.safe_load(rendered_files(settings)["botserver.yaml"])[True]  # YAML 1.1: `on` is true
    assert on["push"]["paths"] == ["botserver", "botserver/**"]


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


@pytest.mark.slow  # pip download locks the dependencies
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
    lock = tmp_path / ".forgejo" / "gbdeploy" / "requirements.txt"
    wheels = list(lock.parent.glob("gbdeploy-*-py3-none-any.whl"))
    assert len(wheels) == 1 and f"wrote {lock}" in out.getvalue()
    with zipfile.ZipFile(
        wheels[0]
    ) as wheel:  # the far end's files go with the code that sends them
        assert {"gbdeploy/remote/far_end/lib.sh", "gbdeploy/remote/far_end/procs.sh"} <= set(
            wheel.namelist()
        )
    lines = [line for line in lock.read_text().splitlines() if not line.startswith("#")]
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    assert f"./.forgejo/gbdeploy/{wheels[0].name} --hash=sha256:{digest}" in lines
    # every dependency pinned by version and hash: nothing resolved by name in the job
    assert all(re.fullmatch(r"\S+==\S+ --hash=sha256:[0-9a-f]{64}", x) for x in lines[1:])
    assert {"fabric", "paramiko", "httpx", "pyyaml"} <= {x.split("==")[0] for x in lines[1:]}
    again = io.StringIO()
    run_workflows(settings, Reporter(stream=again))
    assert f"unchanged {directory / 'botui.yaml'}" in again.getvalue()
    assert f"unchanged {wheels[0]}" in again.getvalue()  # the same code makes the same wheel


@pytest.mark.slow  # pip download locks the dependencies
@pytest.mark.parametrize(("version", "noted"), [("13.0.0", True), ("16.0.0", False)])
def test_run_workflows_says_when_the_forge_does_not_queue_deploys(
    forgejo_factory, tmp_path, version, noted
):
    forgejo = forgejo_factory(version=version)
    settings = dataclasses.replace(
        Settings.from_mapping(DEFAULTS, project_dir=tmp_path), forge=forgejo.forge_settings()
    )
    out = io.StringIO()
    run_workflows(settings, Reporter(stream=out))
    said = f"note: Forgejo {version} runs a component's deploys side by side"
    assert (said in out.getvalue()) is noted


def test_run_workflows_outside_a_repository_says_to_use_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="--out"):
        run_workflows(default_settings(), Reporter(stream=io.StringIO()))


@pytest.mark.slow  # pip download locks the dependencies
def test_run_workflows_uses_the_git_toplevel(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    run_workflows(default_settings(), Reporter(stream=io.StringIO()))
    assert (tmp_path / ".forgejo" / "workflows" / "botserver.yaml").is_file()


def test_config_values_reach_the_shell_as_data_and_the_build_uses_the_runner_disk(
    root_checkout,  # noqa: F811 (the imported fixture)
    stub_gbdeploy,  # noqa: F811
    tmp_path,
):
    checkout = root_checkout
    from gbdeploy_sandbox.runner import RunContext, run_job

    disk = tmp_path / "runner-disk"
    hostile = "x$(touch pwned)`touch pwned2`"
    settings = Settings.from_mapping(
        {
            **DEFAULTS,
            "workflows": {
                "cargo_target_dir": f"{disk}/ci/{{component}}/target",
                "source_dir": f"{disk}/ci/{{component}}/src",
                "sccache_dir": f"{disk}/cache/sccache",
                "cargo_home": f"{disk}/cache/cargo",
                "logs_dir": f"{disk}/logs",
            },
        }
    )
    component = dataclasses.replace(
        settings.components["botserver"],
        name=hostile,  # what load-time validation refuses; the renderer must be safe regardless
        artifact="target/debug/bot$(touch pwned3)",
        build='mkdir -p "$CARGO_TARGET_DIR/debug"\n'
        'printf "$BOTSERVER_COMMIT" > "$CARGO_TARGET_DIR/${GBDEPLOY_BUILT#target/}"\n'
        "echo compiled",
    )
    settings = dataclasses.replace(settings, components={hostile: component})
    context = RunContext(
        sha=git(checkout, "rev-parse", "HEAD"),
        env={"PATH": f"{stub_gbdeploy}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )

    result = run_job(render_workflow(settings, hostile), checkout, context)

    assert result.status == "success", result.log
    assert not list(checkout.rglob("pwned*")) and not list(disk.rglob("pwned*"))  # nothing ran
    target = disk / "ci" / hostile / "target" / "debug" / "bot$(touch pwned3)"
    short = git(checkout / "botserver", "rev-parse", "--short", "HEAD")
    assert target.read_text() == short  # built into the persistent target dir
    call = (tmp_path / "deploy-call").read_text().splitlines()
    assert call[1:4] == ["deploy", hostile, "--artifact"]
    assert call[4].endswith("/gbdeploy-built/bot$(touch pwned3)")  # its copy, taken under lock
    (log,) = (disk / "logs").iterdir()  # the build log, by component and UTC time
    assert re.fullmatch(re.escape(hostile) + r"-build-\d{8}T\d{6}Z-1\.log", log.name)
    assert "compiled" in log.read_text()


def test_the_component_workflow_builds_and_deploys_from_the_component_checkout(
    root_checkout,  # noqa: F811 (the imported fixture)
    stub_gbdeploy,  # noqa: F811
    tmp_path,
):
    from gbdeploy_sandbox.runner import RunContext, run_job

    component_repo = root_checkout / "botserver"  # a clone of the component's own repository
    disk = tmp_path / "disk"
    settings = Settings.from_mapping(
        {
            **DEFAULTS,
            "components": {
                "botserver": {
                    **DEFAULTS["components"]["botserver"],
                    "workflow_repo": "component",
                    "build": 'mkdir -p out && printf "$BOTSERVER_COMMIT" > out/botserver',
                    "artifact": "out/botserver",
                    "siblings": [],
                },
                "botui": {"enabled": False},
            },
            "workflows": {
                "logs_dir": str(disk / "logs"),
                "source_dir": str(disk / "ci" / "{component}" / "src"),
            },
        }
    )
    context = RunContext(
        sha=git(component_repo, "rev-parse", "HEAD"),
        env={"PATH": f"{stub_gbdeploy}:/usr/bin:/bin", "HOME": str(tmp_path)},
        repository="GeneralBots/botserver",
    )

    result = run_job(render_workflow(settings, "botserver"), component_repo, context)

    assert result.status == "success", result.log
    short = git(component_repo, "rev-parse", "--short", "HEAD")
    # built in the persistent tree of the component, at the run's commit
    assert (disk / "ci" / "botserver" / "src" / "botserver" / "out" / "botserver").read_text() == (
        short
    )
    call = (tmp_path / "deploy-call").read_text().splitlines()
    assert call[0] == str(component_repo)  # where the copy of gbdeploy.yaml is
    assert call[4].endswith("/gbdeploy-built/botserver")
    assert call[1:4] + call[5:7] == [
        "deploy",
        "botserver",
        "--artifact",
        "--commit",
        git(component_repo, "rev-parse", "HEAD"),
    ]


def test_the_job_token_counts_as_a_secret_for_the_check():
    text = render_workflow(
        Settings.from_mapping(
            {
                **DEFAULTS,
                "components": {
                    "botserver": {
                        **DEFAULTS["components"]["botserver"],
                        "workflow_repo": "component",
                    },
                    "botui": {"enabled": False},
                },
            }
        ),
        "botserver",
    )
    assert "${{ forgejo.token }}" in text  # botlib is fetched with it in a component workflow
    assert secret_exposures(text) == []
    leaky = text.replace("unset GBDEPLOY_GIT_TOKEN", 'echo "$GBDEPLOY_GIT_TOKEN"')
    assert any("prints a secret" in problem for problem in secret_exposures(leaky))


@pytest.mark.slow  # git over a loopback git server
def test_a_git_pin_the_job_cannot_read_anonymously_is_said_when_rendering(tmp_path):
    from gbdeploy_sandbox.githttp import GitHttpServer

    bare = tmp_path / "git" / "GeneralBots" / "gbdeploy.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    with GitHttpServer(tmp_path / "git", private={"GeneralBots/gbdeploy"}) as server:
        url = server.url_of("GeneralBots/gbdeploy")
        install = f"gbdeploy @ git+{url}@{commit}"
        settings = Settings.from_mapping(
            {**DEFAULTS, "workflows": {"install": install}}, project_dir=tmp_path / "gb"
        )
        out = io.StringIO()
        run_workflows(settings, Reporter(stream=out))
    said = out.getvalue()
    assert f"warning: {url} cannot be read anonymously" in said
    assert "terminal prompts disabled" in said  # git was not allowed to ask
    lock = (tmp_path / "gb" / ".forgejo" / "gbdeploy" / "requirements.txt").read_text()
    assert ".whl" not in lock  # gbdeploy comes from the pin; the lock holds its dependencies


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("workflows", "toolchain_path", "relative/bin"),
        ("workflows", "toolchain_path", "$HOME/bin:$(reboot)"),
        ("workflows", "submodules_secret", "GITHUB_TOKEN"),  # Forgejo refuses such names
        ("workflows", "submodules_secret", "c0ffee" + "0" * 34),  # a token, not its name
        ("workflows", "source_dir", "ci/src"),
        ("forge", "ca_file", "a\nb"),
    ],
)
def test_the_new_keys_are_checked_at_load_and_the_error_names_the_key(section, key, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({**DEFAULTS, section: {**DEFAULTS.get(section, {}), key: value}})
    assert f"{section}.{key}" in str(caught.value)


@pytest.mark.parametrize("value", [["../botlib"], ["botlib=not a repo"], "botlib"])
def test_siblings_are_checked_at_load(value):
    components = {
        "botserver": {**DEFAULTS["components"]["botserver"], "siblings": value},
        "botui": {"enabled": False},
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({**DEFAULTS, "components": components})
    assert "components.botserver.siblings" in str(caught.value)
