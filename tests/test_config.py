"""Configuration and the CLI shell: defaults, validation, the token, layers, exit codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from conftest import TEST_TOKEN

from gbdeploy import errors
from gbdeploy.config import Restart, Settings, Target
from gbdeploy.config_layers import load_config, load_settings
from gbdeploy.config_values import Count, build_dataclass
from gbdeploy_sandbox.gitworld import GitWorld

DOCUMENTED_COMMANDS = (
    "release",
    "deploy",
    "verify",
    "rollback",
    "runs",
    "wait",
    "status",
    "doctor",
    "workflows",
    "demo",
)


@pytest.fixture
def project(tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory (no git) as the current directory."""
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def settings_in(directory: Path, text: str | None = None) -> Settings:
    if text is not None:
        (directory / "gbdeploy.yaml").write_text(text)
    return load_settings(start=directory)


# --- defaults ----------------------------------------------------------------------------------


def test_a_config_file_of_comments_only_gives_the_defaults(project: Path, run_gbdeploy):
    """Every key commented out (or a file just created): YAML reads nothing, not an error."""
    (project / "gbdeploy.yaml").write_text("# forge:\n#   url: https://forge.example\n")

    result = run_gbdeploy("config")

    assert result.code == 0, result.text
    assert "http://alm.pragmatismo.com.br" in result.out
    assert settings_in(project).project_dir == project


def test_the_defaults_are_general_bots_production(project: Path):
    settings = settings_in(project)

    assert (settings.forge.url, settings.forge.owner, settings.forge.repo) == (
        "http://alm.pragmatismo.com.br",
        "GeneralBots",
        "gb",
    )
    assert settings.forge.token is None
    assert settings.git.branch == "main"
    assert settings.git.submodule_remotes == ["origin", "alm"]
    assert settings.git.root_remotes == ["alm"]
    assert settings.git.message == "Update submodule {component} to {short_sha}"
    assert settings.targets == {"system": Target("system", "pragmatismo-system")}
    assert settings.project_dir is None

    botserver = settings.component("botserver")
    assert botserver.submodule == "botserver"
    assert botserver.workflow == "botserver.yaml"
    assert botserver.target == "system"
    assert botserver.binary == "/opt/gbo/bin/botserver"
    assert botserver.artifact == "target/debug/botserver"
    assert botserver.user == "gbuser"
    assert botserver.start == "./botserver --noconsole"
    assert botserver.run_as == "sudo -u {user}"
    assert botserver.log == "/opt/gbo/logs/error.log"
    assert botserver.restart == Restart("process")
    assert botserver.health == "http://localhost:5858/health"
    assert botserver.directory == "/opt/gbo/bin"

    botui = settings.component("botui")
    assert botui.submodule == "botui"
    assert botui.workflow == "botui.yaml"
    assert botui.binary == "/opt/gbo/bin/botui"
    assert botui.artifact == "target/release/botui"
    assert botui.build == "cargo build --release -p botui --features embed-ui"
    assert botui.user == "gbuser"
    assert botui.restart == Restart("systemd", "ui.service")
    assert botui.health == "http://localhost:5859/health"


def test_doctor_and_maintenance_look_at_the_caches_the_workflows_build_in(project: Path):
    """The runner's caches as FACTS has them (/opt/gbo/cache): the rendered workflows fill them,
    `maintain` trims them, `doctor` measures them — one place, not three."""
    settings = settings_in(project)
    caches = (settings.workflows.sccache_dir, settings.workflows.cargo_home)
    assert caches == ("/opt/gbo/cache/sccache", "/opt/gbo/cache/cargo")


@pytest.mark.parametrize("section", ["doctor", "maintenance"])
def test_the_runner_caches_are_named_once_where_the_builds_put_them(project: Path, section: str):
    """Set elsewhere, a cache would be measured and trimmed in one place and filled in another."""
    with pytest.raises(errors.ConfigError, match=rf"{section}\.sccache_dir: moved to workflows"):
        settings_in(project, f"{section}: {{sccache_dir: /srv/cache}}\n")
    moved = settings_in(project, "workflows: {sccache_dir: /srv/cache}\n")
    assert moved.workflows.sccache_dir == "/srv/cache"
    with pytest.raises(errors.ConfigError, match=r"workflows\.cargo_home: is one cache"):
        settings_in(project, "workflows: {cargo_home: '/srv/{component}/cargo'}\n")


def test_project_values_merge_over_defaults_and_a_component_can_be_dropped(project: Path):
    settings = settings_in(
        project,
        "targets:\n  box: {ssh: prod-host, lxc: pragmatismo-system}\n"
        "components:\n  botserver: {target: box, binary: /srv/botserver}\n"
        "  botui: {enabled: false}\n",
    )
    botserver = settings.component("botserver")
    assert (botserver.target, botserver.binary, botserver.user) == (
        "box",
        "/srv/botserver",
        "gbuser",
    )
    assert settings.target_of(botserver) == Target("box", "prod-host", "pragmatismo-system")
    assert "botui" not in settings.components


def test_unknown_component_is_a_usage_error(project: Path):
    with pytest.raises(errors.UsageError, match="unknown component 'botbanana'") as caught:
        settings_in(project).component("botbanana")
    assert caught.value.exit_code == 2


# --- finding the files -------------------------------------------------------------------------


def test_gbdeploy_yaml_is_found_from_a_subdirectory_upward(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    (project / "gbdeploy.yaml").write_text("git: {branch: trunk}\n")
    deep = project / "botserver" / "src"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)

    settings = load_settings(load_config())

    assert settings.git.branch == "trunk"
    assert settings.project_dir == project


def test_runtime_file_and_environment_override_the_project_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    (project / "gbdeploy.yaml").write_text("git: {branch: trunk, root_remotes: [alm]}\n")
    runtime = project / "ci.yaml"
    runtime.write_text("git: {root_remotes: [origin]}\nforge: {owner: Someone}\n")
    monkeypatch.setenv("GBDEPLOY_FORGE_OWNER", "FromEnv")

    settings = load_settings(load_config(str(runtime)))

    assert settings.git.branch == "trunk"
    assert settings.git.root_remotes == ["origin"]
    assert settings.forge.owner == "Someone"  # -f is the highest layer, above GBDEPLOY_*

    monkeypatch.setenv("GBDEPLOY_GIT_BRANCH", "dev")
    assert load_settings(load_config()).git.branch == "dev"


def test_dash_f_file_changes_what_release_does(git_world: GitWorld, run_gbdeploy, tmp_path: Path):
    """The project says root_remotes [alm]; `-f` says [origin]: origin's gb.git gets the commit."""
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text("git:\n  root_remotes: [origin]\n")
    alm_root = git_world.ref("alm", "gb")
    sha = git_world.commit_in_submodule()

    result = run_gbdeploy("-f", str(runtime), "release", "botserver", "--no-wait")

    assert result.code == 0, result.text
    assert git_world.pointer("origin") == sha
    assert git_world.ref("alm", "gb") == alm_root


# --- the token ---------------------------------------------------------------------------------


def test_token_comes_from_gbdeploy_forge_token_then_forgejo_token(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("FORGEJO_TOKEN", "from-forgejo-variable")
    token = settings_in(project).forge.token
    assert token is not None
    assert token.reveal() == "from-forgejo-variable"

    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", TEST_TOKEN)
    token = settings_in(project).forge.token
    assert token is not None
    assert token.reveal() == TEST_TOKEN


def test_token_never_shows_in_settings_repr_or_str(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", TEST_TOKEN)
    settings = settings_in(project)
    for text in (repr(settings), str(settings), repr(settings.forge), f"{settings.forge.token}"):
        assert TEST_TOKEN not in text
    assert "***" in repr(settings.forge)


def test_token_in_a_file_is_refused(project: Path, run_gbdeploy):
    (project / "gbdeploy.yaml").write_text("forge:\n  token: committed-secret-123\n")
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2
    assert "config: forge.token: the token is never read from a file" in result.err
    assert "GBDEPLOY_FORGE_TOKEN" in result.err
    assert "committed-secret-123" not in result.text


# --- bad config: exit 2 and the key ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("gti: {branch: main}\n", "gti"),
        ("git: {brnch: dev}\n", "git.brnch"),
        ("git: {submodule_remotes: origin}\n", "git.submodule_remotes"),
        ("git: {root_remotes: [alm, [x]]}\n", "git.root_remotes[1]"),
        ("ssh: {accept_new_host_keys: 'yes'}\n", "ssh.accept_new_host_keys"),
        ("release: {timeout: soon}\n", "release.timeout"),
        ("doctor: {min_vhosts: 2.5}\n", "doctor.min_vhosts"),
        ("forge: 3\n", "forge"),
        ("components: {botserver: {target: nowhere}}\n", "components.botserver.target"),
        ("components: {botserver: {binary: bin/botserver}}\n", "components.botserver.binary"),
        ("components: {botserver: {restart: reboot}}\n", "components.botserver.restart"),
        ("components: {botcoder: {user: gbuser}}\n", "components.botcoder.binary"),
        ("targets: {system: {host: x}}\n", "targets.system.host"),
        ("components: {botui: null}\n", "components.botui"),
        ("components: {botui: {enabled: 'no'}}\n", "components.botui.enabled"),
        # URLs: a scheme, a host and (for health) a port
        (
            "components: {botserver: {health: '127.0.0.1:5858/health'}}\n",
            "components.botserver.health",
        ),
        (
            "components: {botserver: {health: 'ftp://localhost:21/x'}}\n",
            "components.botserver.health",
        ),
        (
            "components: {botserver: {health: 'http://localhost/health'}}\n",
            "components.botserver.health",
        ),
        (
            "components: {botserver: {health: 'http://localhost:99999/'}}\n",
            "components.botserver.health",
        ),
        (
            "components: {botserver: {health: 'http://x$(touch y)z:1/'}}\n",
            "components.botserver.health",
        ),
        ("forge: {url: 'alm.example:3000'}\n", "forge.url"),
        ("forge: {url: 'https://user:pw@alm.example'}\n", "forge.url"),
        # numbers and their ranges
        ("components: {botserver: {stop_timeout: -5}}\n", "components.botserver.stop_timeout"),
        ("components: {botserver: {health_timeout: 0}}\n", "components.botserver.health_timeout"),
        ("release: {timeout: .inf}\n", "release.timeout"),
        ("release: {poll_interval: .nan}\n", "release.poll_interval"),
        ("forge: {timeout: 1e30}\n", "forge.timeout"),
        ("doctor: {min_vhosts: -1}\n", "doctor.min_vhosts"),
        ("doctor: {proxy_ports: [80, 70000]}\n", "doctor.proxy_ports[1]"),
        (
            "maintenance: {max_age_days: 1000000000000000000000000000000}\n",
            "maintenance.max_age_days",
        ),
        # names safe in paths and shells
        ("components: {botserver: {user: 123}}\n", "components.botserver.user"),
        ("components: {botserver: {user: 'gb user'}}\n", "components.botserver.user"),
        ("components: {'x$(touch pwned)y': {binary: /opt/x}}\n", "components"),
        ("components: {botserver: {artifact: 'target/$(id)'}}\n", "components.botserver.artifact"),
        ("components: {botserver: {submodule: ../elsewhere}}\n", "components.botserver.submodule"),
        ("components: {botserver: {workflow: 'build.sh'}}\n", "components.botserver.workflow"),
        (
            "components: {botserver: {restart: {systemd: 'ui; reboot'}}}\n",
            "components.botserver.restart.systemd",
        ),
        ("components: {botserver: {env: {'A B': x}}}\n", "components.botserver.env.A B"),
        ("components: {botserver: {run_as: 'sudo -u {usr}'}}\n", "components.botserver.run_as"),
        ("targets: {system: {ssh: '-oProxyCommand=x'}}\n", "targets.system.ssh"),
        ("targets: {system: {ssh: h, lxc: 'c 1'}}\n", "targets.system.lxc"),
        ("doctor: {botui_unit: '--now'}\n", "doctor.botui_unit"),
        ("git: {branch: '--force'}\n", "git.branch"),
        ("git: {root_remotes: ['-u']}\n", "git.root_remotes[0]"),
        ("git: {message: 'Bump {component} to {version}'}\n", "git.message"),
        # paths that name no file
        ("components: {botserver: {binary: /}}\n", "components.botserver.binary"),
        ("components: {botserver: {binary: /opt/gbo/bin/}}\n", "components.botserver.binary"),
        ("components: {botserver: {binary: /opt/../etc/passwd}}\n", "components.botserver.binary"),
        ("components: {botserver: {log: relative.log}}\n", "components.botserver.log"),
    ],
)
def test_a_wrong_key_or_value_exits_2_naming_the_key(project: Path, run_gbdeploy, text, key):
    (project / "gbdeploy.yaml").write_text(text)
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2, result.text
    assert f"gbdeploy: error: config: {key}:" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("text", ["- forge\n- git\n", "just text\n", "42\n"])
def test_a_file_whose_top_level_is_not_a_mapping_exits_2_naming_the_file(
    project: Path, run_gbdeploy, text: str
):
    (project / "gbdeploy.yaml").write_text(text)
    result = run_gbdeploy("status")
    assert result.code == 2, result.text
    assert f"config: {project / 'gbdeploy.yaml'}: the top level must be a mapping" in result.err
    assert "Traceback" not in result.text


def test_a_python_config_file_is_refused_not_run(project: Path, run_gbdeploy):
    (project / "ci.py").write_text("open('ran', 'w').close()\n")
    result = run_gbdeploy("-f", "ci.py", "status")
    assert result.code == 2, result.text
    assert "YAML or JSON config files, not Python" in result.err
    assert not (project / "ran").exists()


def test_a_bad_value_from_the_environment_names_its_variable(
    project: Path, run_gbdeploy, monkeypatch: pytest.MonkeyPatch
):
    (project / "gbdeploy.yaml").write_text("release: {timeout: 60}\n")
    monkeypatch.setenv("GBDEPLOY_RELEASE_TIMEOUT", "-5")
    result = run_gbdeploy("runs")
    assert result.code == 2, result.text
    assert "config: release.timeout: expected a number of seconds above 0" in result.err
    assert "(in GBDEPLOY_RELEASE_TIMEOUT)" in result.err
    assert "gbdeploy.yaml" not in result.err  # the file's value is not the bad one


def test_a_bad_value_in_a_file_names_that_file_alone(
    project: Path, run_gbdeploy, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch
):
    (gbdeploy_env / ".gbdeploy.yaml").write_text("targets: {system: {ssh: 'bad host'}}\n")
    (project / "gbdeploy.yaml").write_text("git: {branch: main}\n")
    monkeypatch.setenv("GBDEPLOY_FORGE_URL", "http://127.0.0.1:9")
    result = run_gbdeploy("runs")
    assert result.code == 2, result.text
    assert "config: targets.system.ssh: " in result.err
    assert f"(in {gbdeploy_env / '.gbdeploy.yaml'})" in result.err
    assert "GBDEPLOY_FORGE_URL" not in result.err and str(project) not in result.err


@pytest.mark.parametrize(
    ("variable", "said"),
    [
        (
            "GBDEPLOY_FORGE_ULR",
            "GBDEPLOY_FORGE_ULR: matches no configuration key: did you mean GBDEPLOY_FORGE_URL?",
        ),
        (
            "GBDEPLOY_COMPONENTS_BOTSERVER_HELTH",
            "did you mean GBDEPLOY_COMPONENTS_BOTSERVER_HEALTH?",
        ),
        ("GBDEPLOY_NOTHING_LIKE_IT", "GBDEPLOY_NOTHING_LIKE_IT: matches no configuration key"),
    ],
)
def test_a_variable_that_matches_no_key_is_an_error_like_a_wrong_key(
    project: Path, run_gbdeploy, monkeypatch: pytest.MonkeyPatch, variable: str, said: str
):
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    result = run_gbdeploy("config")
    assert result.code == 2, result.text
    assert said in result.err
    assert result.out == ""  # before any table


def test_the_variables_a_rendered_workflow_sets_are_not_taken_for_keys(
    project: Path, run_gbdeploy, monkeypatch: pytest.MonkeyPatch
):
    """The deploy step runs gbdeploy with its job's env (GBDEPLOY_COMPONENT, …): every such
    name a rendered workflow uses is a key or one of gbdeploy's own."""
    import re

    from gbdeploy.config import DEFAULTS
    from gbdeploy.config_layers import OWN_VARIABLES, _variables, load_settings
    from gbdeploy.workflows import rendered_files

    settings = load_settings(start=project)
    text = "\n".join(rendered_files(settings).values())
    used = set(re.findall(r"\bGBDEPLOY_[A-Z0-9_]*[A-Z0-9]\b", text))
    assert used and used <= OWN_VARIABLES | set(_variables(DEFAULTS))
    for name in OWN_VARIABLES - {"GBDEPLOY_DEBUG"}:
        monkeypatch.setenv(name, "x")
    assert run_gbdeploy("config").code == 0


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("GBDEPLOY_RELEASE_TIMEOUT", "soon", "expected a number (release.timeout), got 'soon'"),
        ("GBDEPLOY_COMPONENTS_BOTSERVER_KEEP_RELEASES", "2.5", "expected a whole number"),
        ("GBDEPLOY_SSH_ACCEPT_NEW_HOST_KEYS", "maybe", "expected true or false"),
        ("GBDEPLOY_GIT_SUBMODULE_REMOTES", "origin", "git.submodule_remotes is a list"),
    ],
)
def test_a_bad_variable_value_names_the_variable_and_the_type(
    project: Path, run_gbdeploy, monkeypatch: pytest.MonkeyPatch, variable, value, said
):
    monkeypatch.setenv(variable, value)
    result = run_gbdeploy("config")
    assert result.code == 2, result.text
    assert f"config: {variable}: " in result.err and said in result.err


def test_false_from_a_variable_is_false(project: Path, monkeypatch: pytest.MonkeyPatch):
    from gbdeploy.config_layers import load_settings

    monkeypatch.setenv("GBDEPLOY_SSH_ACCEPT_NEW_HOST_KEYS", "false")
    assert load_settings(start=project).ssh.accept_new_host_keys is False
    monkeypatch.setenv("GBDEPLOY_SSH_ACCEPT_NEW_HOST_KEYS", "true")
    assert load_settings(start=project).ssh.accept_new_host_keys is True


def test_a_number_variable_that_is_text_exits_2_naming_it(
    project: Path, run_gbdeploy, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GBDEPLOY_FORGE_TIMEOUT", "soon")
    result = run_gbdeploy("runs")
    assert result.code == 2, result.text
    assert "config: GBDEPLOY_FORGE_TIMEOUT:" in result.err
    assert "Traceback" not in result.text


def test_a_name_yaml_reads_as_a_number_is_the_name(project: Path):
    settings = settings_in(
        project, "targets: {2024: {ssh: box}}\ncomponents: {7: {binary: /opt/x, target: 2024}}\n"
    )
    assert settings.component("7").target == "2024"
    assert settings.target_of(settings.component("7")) == Target("2024", "box")


def test_a_systemd_restart_can_replace_the_process_default_and_back(project: Path):
    settings = settings_in(
        project,
        "components:\n  botserver: {restart: {systemd: system.service}}\n"
        "  botui: {restart: process}\n",
    )
    assert settings.component("botserver").restart == Restart("systemd", "system.service")
    assert settings.component("botui").restart == Restart("process")


@pytest.mark.parametrize(
    "token", [f"{TEST_TOKEN}\nX-Injected: 1", f"{TEST_TOKEN} tail", f"{TEST_TOKEN}\x7f", "tök-ü"]
)
def test_a_token_that_cannot_be_one_exits_2_and_is_never_shown(
    project: Path, run_gbdeploy, monkeypatch: pytest.MonkeyPatch, token: str
):
    (project / "gbdeploy.yaml").write_text("git: {branch: main}\n")
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", token)
    result = run_gbdeploy("runs")
    assert result.code == 2, result.text
    assert "config: GBDEPLOY_FORGE_TOKEN: holds a character no token has" in result.err
    assert "gbdeploy.yaml" not in result.err  # the token comes from the environment only
    for shown in (token, repr(token), repr(token.encode()), TEST_TOKEN, "tök", "t\\xf6k"):
        assert shown not in result.text


def test_the_defaults_are_written_once_and_every_key_is_a_layer_key():
    """DEFAULTS holds every key of every section, with the dataclass's default."""
    from dataclasses import fields

    from gbdeploy.config import DEFAULTS, DoctorSettings, ForgeSettings, GitSettings

    assert DEFAULTS["forge"] == {
        "url": ForgeSettings.url,
        "owner": ForgeSettings.owner,
        "repo": ForgeSettings.repo,
        "timeout": ForgeSettings.timeout,
        "ca_file": None,  # verified against the system's CAs
    }
    assert DEFAULTS["git"]["branch"] == GitSettings.branch
    assert set(DEFAULTS["doctor"]) == {f.name for f in fields(DoctorSettings)}
    assert DEFAULTS["components"]["botserver"]["user"] == "gbuser"
    assert DEFAULTS["components"]["botui"]["submodule"] == "botui"


@dataclass(frozen=True)
class Section:
    via: Literal["lxc", "incus"] = "lxc"
    keep: Count = 3


def test_a_key_is_one_typed_field_whose_type_carries_its_rule():
    """How a key is added: one field; its type's rule refuses bad values at load."""
    assert build_dataclass(Section, {}, "s") == Section("lxc", 3)
    assert build_dataclass(Section, {"via": "incus", "keep": 5}, "s") == Section("incus", 5)
    with pytest.raises(errors.ConfigError, match=r"s\.via: expected one of lxc, incus, got 'lx'"):
        build_dataclass(Section, {"via": "lx"}, "s")
    with pytest.raises(errors.ConfigError, match=r"s\.keep: expected a whole number from 0"):
        build_dataclass(Section, {"keep": -1}, "s")


def test_any_component_key_can_be_set_from_the_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GBDEPLOY_COMPONENTS_BOTUI_USER", "uiuser")
    monkeypatch.setenv("GBDEPLOY_COMPONENTS_BOTSERVER_STOP_TIMEOUT", "7")
    settings = load_settings(load_config())
    assert settings.component("botui").user == "uiuser"
    assert settings.component("botserver").stop_timeout == 7.0


def test_a_broken_yaml_file_exits_2_naming_the_file(project: Path, run_gbdeploy):
    (project / "gbdeploy.yaml").write_text("git: [\n")
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2
    assert f"config: {project / 'gbdeploy.yaml'}:2: not valid YAML" in result.err


def test_a_missing_dash_f_file_exits_2(project: Path, run_gbdeploy):
    result = run_gbdeploy("-f", "no-such.yaml", "release", "botserver", "--no-wait")
    assert result.code == 2
    assert "no such file: no-such.yaml" in result.err


def test_a_list_from_an_environment_variable_exits_2_naming_it(
    project: Path, run_gbdeploy, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GBDEPLOY_GIT_SUBMODULE_REMOTES", "origin")
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2
    assert "config: GBDEPLOY_GIT_SUBMODULE_REMOTES:" in result.err


# --- the program -------------------------------------------------------------------------------


def test_list_shows_every_design_command(project: Path, run_gbdeploy):
    result = run_gbdeploy("--list")
    assert result.code == 0
    listed = {line.split()[0] for line in result.out.splitlines() if line.startswith("  ")}
    assert set(DOCUMENTED_COMMANDS) <= listed


@pytest.mark.parametrize(
    "args",
    [("release",), ("no-such-command",), ("--no-such-flag",), ("release", "botserver", "--bogus")],
)
def test_bad_command_lines_exit_2(project: Path, run_gbdeploy, args):
    result = run_gbdeploy(*args)
    assert result.code == 2, result.text
    assert result.err.startswith("gbdeploy: error:")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.UsageError("--since expects an ISO time"), 2),
        (errors.PreflightError("not ready", hint="do this"), 2),
        (errors.VerificationFailed("wrong binary", check="commit"), 1),
        (errors.CIRunFailed("run 7 failed"), 3),
        (errors.WaitTimeout("gave up"), 4),
        (errors.RestoreFailed("both binaries gone"), 5),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_error_exits_with_its_code_and_a_redacted_message(
    project: Path, run_gbdeploy, monkeypatch: pytest.MonkeyPatch, mocker, error, code
):
    """Every error class keeps its exit code; the token in a message is masked."""
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", TEST_TOKEN)
    error.message += f" (token {TEST_TOKEN})"
    mocker.patch("gbdeploy.verify.run_verify", side_effect=error)

    result = run_gbdeploy("verify", "botserver")

    assert result.code == code
    assert "\ngbdeploy: error: " in "\n" + result.err  # after the built-in defaults notice
    assert "(token ***)" in result.err
    assert TEST_TOKEN not in result.text
