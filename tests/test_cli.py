"""The command line as a user meets it: help, short flags, option errors, `config`, the notice
about production defaults, the confirmation before a deploy, `-v`/`-q`, a light `--list`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Exit

from gbdeploy import output
from gbdeploy.cli import SHORT_FLAGS, confirm
from gbdeploy.tasks import namespace


@pytest.fixture
def run_gbdeploy(run_gbdeploy):
    """As `gbdeploy` runs from a shell: through main()'s rewriting of the command line."""
    from gbdeploy.program import help_first, optional_positionals

    def run(*args: str):
        return run_gbdeploy(*optional_positionals(help_first(["gbdeploy", *args]))[1:])

    return run


@pytest.fixture
def empty_dir(tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "empty"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


# --- help ---------------------------------------------------------------------------------------
def test_help_shows_gbdeploys_commands_options_exit_codes_and_completion(run_gbdeploy, empty_dir):
    result = run_gbdeploy("--help")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines.index("Commands:") < 8  # gbdeploy's commands come first
    for name in ("release", "deploy", "history", "logs", "config", "rollback"):
        assert any(line.startswith(f"  {name} ") for line in lines), name
    for noise in ("--pty", "--echo", "--warn-only", "--write-pyc", "Core options"):
        assert noise not in result.out
    assert "-v, --verbose" in result.out and "-q, --quiet" in result.out
    codes = {line.split()[0]: line for line in lines if line[:2] == "  " and line.split()}
    assert "failed AND could not restore" in codes["5"]
    assert "interrupted (Ctrl-C)" in codes["130"]
    assert "--print-completion-script bash" in result.out


@pytest.mark.parametrize("argv", [["release", "--help"], ["--help", "release"]])
def test_command_help_shows_the_component_as_an_argument_without_invoke_noise(
    run_gbdeploy, empty_dir, argv
):
    result = run_gbdeploy(*argv)
    assert result.code == 0
    assert result.out.startswith("Usage: gbdeploy release COMPONENT [OPTIONS]")
    assert "Docstring:" not in result.out and "[other tasks here" not in result.out
    assert "--component" not in result.out
    assert "-d, --dry-run" in result.out
    assert "Exit codes:" in result.out


def test_each_short_flag_has_one_meaning_in_every_command():
    meanings: dict[str, set[str]] = {}
    for name in namespace.task_names:
        for argument in namespace[name].get_arguments():
            for short in (n for n in argument.names if len(n) == 1):
                assert SHORT_FLAGS.get(argument.name) == short, (name, short)
                meanings.setdefault(short, set()).add(argument.name)
    assert meanings["c"] == {"commit"}
    assert meanings["d"] == {"dry_run"}
    assert meanings["n"] <= {"lines", "limit"}  # a count, wherever it exists
    assert "o" not in meanings  # --no-verify and --commit no longer share it


# --- option errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["runs", "--limit", "x"], "--limit expects a whole number, got 'x'"),
        (["runs", "--limit=x"], "--limit expects a whole number, got 'x'"),
        (["logs", "botserver", "-n", "many"], "-n expects a whole number, got 'many'"),
        (["history", "botserver", "--limit", "-3"], "--limit expects a number from 0"),
        (["history", "botserver", "--limit", "0"], "--limit must be at least 1"),
        (["runs", "--no-such-option"], "--no-such-option"),
    ],
)
def test_a_bad_option_value_is_exit_2_with_no_traceback(run_gbdeploy, empty_dir, argv, said):
    result = run_gbdeploy(*argv)
    assert result.code == 2, result.text
    assert said in result.err
    assert "Traceback" not in result.text


# --- config -------------------------------------------------------------------------------------
def test_config_names_the_file_or_variable_behind_each_value(
    run_gbdeploy, empty_dir, gbdeploy_env, monkeypatch
):
    (gbdeploy_env / ".gbdeploy.yaml").write_text("targets: {system: {ssh: my-host}}\n")
    project = empty_dir / "gbdeploy.yaml"
    project.write_text("forge: {owner: Someone}\ngit: {branch: trunk}\n")
    runtime = empty_dir / "extra.yaml"
    runtime.write_text("git: {branch: release}\n")
    monkeypatch.setenv("GBDEPLOY_FORGE_URL", "http://127.0.0.1:3000")
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", "tok-secret-value-123")

    result = run_gbdeploy("-f", str(runtime), "config", "--json")

    assert result.code == 0, result.text
    assert "tok-secret-value-123" not in result.text
    data = json.loads(result.out)
    values = data["values"]
    assert values["forge.owner"] == {"value": "Someone", "source": "project", "from": str(project)}
    assert values["forge.url"]["from"] == "GBDEPLOY_FORGE_URL"
    assert values["forge.url"]["value"] == "http://127.0.0.1:3000"
    assert values["git.branch"] == {"value": "release", "source": "runtime", "from": str(runtime)}
    assert values["targets.system.ssh"]["source"] == "user"
    assert values["forge.repo"] == {"value": "gb", "source": "default", "from": "built-in"}
    assert data["token"] == {"set": True, "from": "GBDEPLOY_FORGE_TOKEN"}
    assert data["files"]["project"] == str(project)
    assert data["files"]["system"] is None

    table = run_gbdeploy("config")
    assert table.code == 0
    assert "token: set (from GBDEPLOY_FORGE_TOKEN)" in table.out
    assert "tok-secret-value-123" not in table.text
    row = next(line for line in table.out.splitlines() if line.startswith("forge.owner "))
    assert row.split() == ["forge.owner", "Someone", str(project)]


def test_config_lists_a_bad_value_then_fails_with_exit_2(run_gbdeploy, empty_dir):
    (empty_dir / "gbdeploy.yaml").write_text("release: {timeout: soon}\n")
    result = run_gbdeploy("config")
    assert result.code == 2
    assert "release.timeout" in result.out  # shown, with where it came from
    assert "release.timeout" in result.err and "expected number" in result.err


# --- built-in production defaults, confirmation -------------------------------------------------
def test_with_no_project_file_a_command_says_it_aims_at_the_built_in_production(
    run_gbdeploy, empty_dir
):
    result = run_gbdeploy("deploy", "botserver", "--dry-run")
    assert result.code == 0, result.text
    notice = [line for line in result.err.splitlines() if "built-in production defaults" in line]
    assert len(notice) == 1
    assert "ssh pragmatismo-system" in notice[0] and "alm.pragmatismo.com.br" in notice[0]
    assert "built-in production" not in run_gbdeploy("config").err


def test_status_in_an_empty_directory_says_so_too(run_gbdeploy, empty_dir):
    result = run_gbdeploy("status", "botserver")  # pragmatismo-system is out of reach in tests
    assert "using the built-in production defaults" in result.err
    assert "Traceback" not in result.text


def test_a_project_file_silences_the_notice(run_gbdeploy, empty_dir):
    (empty_dir / "gbdeploy.yaml").write_text("forge: {url: 'http://127.0.0.1:9'}\n")
    result = run_gbdeploy("deploy", "botserver", "--dry-run")
    assert result.code == 0, result.text
    assert "built-in production" not in result.err


def test_deploy_from_a_terminal_asks_first_and_a_no_changes_nothing(
    run_gbdeploy, empty_dir, mocker
):
    mocker.patch("gbdeploy.cli.is_terminal", return_value=True)
    mocker.patch("gbdeploy.cli.in_ci", return_value=False)  # a person at the terminal
    ask = mocker.patch("builtins.input", return_value="n")
    run_deploy = mocker.patch("gbdeploy.deploy.run_deploy")

    result = run_gbdeploy("deploy", "botserver", "--artifact", "/bin/true", "-c", "1a2b3c4")

    assert result.code == 0  # the user's answer, not a failure
    assert "not confirmed: nothing done" in result.err
    question = ask.call_args.args[0]
    assert question.startswith("deploy botserver /bin/true (commit 1a2b3c4) to ")
    assert "/opt/gbo/bin/botserver on target system (ssh pragmatismo-system)" in question
    run_deploy.assert_not_called()


@pytest.mark.parametrize("argv", [["--yes"], ["-y"]])
def test_yes_skips_the_question(run_gbdeploy, empty_dir, mocker, argv):
    mocker.patch("gbdeploy.cli.is_terminal", return_value=True)
    ask = mocker.patch("builtins.input")
    run_rollback = mocker.patch("gbdeploy.deploy.run_rollback")
    result = run_gbdeploy("rollback", "botserver", *argv)
    assert result.code == 0, result.text
    ask.assert_not_called()
    run_rollback.assert_called_once()


@pytest.mark.parametrize("variable", ["CI", "FORGEJO_ACTIONS", "GITHUB_ACTIONS"])
def test_in_ci_nothing_is_asked_even_on_a_terminal(mocker, monkeypatch, variable):
    # forgejo-runner's host mode gives every step a PTY: a terminal with nobody at it.
    for name in ("CI", "FORGEJO_ACTIONS", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "true")
    mocker.patch("gbdeploy.cli.is_terminal", return_value=True)
    confirm("deploy?", yes=False, ask=lambda _: pytest.fail("asked"))


def test_without_a_terminal_nothing_is_asked(mocker):
    mocker.patch("gbdeploy.cli.is_terminal", return_value=False)
    confirm("deploy?", yes=False, ask=lambda _: pytest.fail("asked"))
    mocker.patch("gbdeploy.cli.is_terminal", return_value=True)
    mocker.patch("gbdeploy.cli.in_ci", return_value=False)
    confirm("deploy?", yes=False, ask=lambda _: "yes")
    with pytest.raises(Exit) as stopped:
        confirm("deploy?", yes=False, ask=lambda _: "")
    assert stopped.value.code == 0


# --- verbosity, --list ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "verbosity"),
    [([], 0), (["-v"], 1), (["-q"], -1), (["--quiet"], -1), (["config", "-v"], 1)],
)
def test_v_and_q_set_the_reporters_verbosity(run_gbdeploy, empty_dir, argv, verbosity):
    args = argv if "config" in argv else [*argv, "config"]
    assert run_gbdeploy(*args).code == 0
    assert output.options.verbosity == verbosity
    assert output.Reporter().verbosity == verbosity
    output.options.verbosity = 0


@pytest.mark.slow  # a python process
def test_list_loads_no_network_ssh_or_git_library(empty_dir):
    probe = (
        "import sys\n"
        "from gbdeploy.program import program\n"
        "program.run(['gbdeploy', '--list'], exit=False)\n"
        "heavy = ('httpx', 'paramiko', 'fabric', 'git', 'gbdeploy_sandbox')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=empty_dir
    )
    assert result.stdout.splitlines()[-1] == "[]"
    assert "history" in result.stdout and "logs" in result.stdout


def test_the_program_leaves_its_objects_out_of_the_collections_at_exit(empty_dir):
    """The interpreter's exit collects every object of the libraries a command loaded (tens of
    ms after a deploy's work is done) unless the program froze them as it ended."""
    probe = (
        "import atexit, gc, sys\n"
        "from gbdeploy.program import main\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
        "sys.argv = ['gbdeploy', '--list']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=empty_dir
    )
    assert result.stdout.splitlines()[-1] == "frozen at exit: True"


# --- under invoke -------------------------------------------------------------------------------
@pytest.mark.slow  # a python process
def test_under_invoke_the_project_file_is_found_as_under_gbdeploy(empty_dir):
    """A two-line tasks.py beside gbdeploy.yaml, `invoke` run for real from a subdirectory."""
    (empty_dir / "gbdeploy.yaml").write_text(
        "forge: {url: 'http://127.0.0.1:9', owner: Someone}\ntargets: {system: {ssh: my-host}}\n"
    )
    (empty_dir / "tasks.py").write_text("from gbdeploy.tasks import namespace\n\nns = namespace\n")
    below = empty_dir / "botserver"
    below.mkdir()
    invoke = [sys.executable, "-m", "invoke"]

    shown = subprocess.run([*invoke, "config", "--json"], capture_output=True, text=True, cwd=below)
    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)["values"]
    assert values["forge.owner"]["value"] == "Someone"
    assert values["targets.system.ssh"]["from"] == str(empty_dir / "gbdeploy.yaml")

    planned = subprocess.run(
        [*invoke, "deploy", "botserver", "--dry-run"], capture_output=True, text=True, cwd=below
    )
    assert planned.returncode == 0, planned.stderr
    assert "built-in production" not in planned.stderr
    assert "my-host" in planned.stdout


# --- typos, help, config KEY, disabled components (issue 23, item 8) ---------------------------
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["relase", "botserver"], "unknown command 'relase': did you mean `release`?"),
        (["release", "botserver", "--dry-rn"], "did you mean `--dry-run`?"),
        (["--verbsoe", "config"], "unknown option --verbsoe: did you mean `--verbose`?"),
        (["help", "rollbak"], "did you mean `rollback`?"),
        (["xyzzy"], "`gbdeploy help` lists the commands"),
    ],
)
def test_a_typo_is_exit_2_with_the_nearest_command_or_option(run_gbdeploy, empty_dir, argv, said):
    result = run_gbdeploy(*argv)
    assert result.code == 2, result.text
    assert said in result.err
    assert "No idea what" not in result.err


@pytest.mark.parametrize(
    ("argv", "starts"), [(["help"], "gbdeploy "), (["help", "status"], "Usage: gbdeploy status")]
)
def test_help_as_a_command(run_gbdeploy, empty_dir, argv, starts):
    result = run_gbdeploy(*argv)
    assert result.code == 0, result.text
    assert result.out.startswith(starts)


def test_config_key_shows_only_that_key_or_section(run_gbdeploy, empty_dir):
    keys = [line.split()[0] for line in run_gbdeploy("config", "forge").out.splitlines()[7:]]
    assert keys[0] == "key" and keys[1:] and all(k.startswith("forge.") for k in keys[1:])
    data = json.loads(run_gbdeploy("config", "forge.url", "--json").out)
    assert list(data["values"]) == ["forge.url"]
    wrong = run_gbdeploy("config", "forge.ulr")
    assert wrong.code == 2 and "did you mean 'forge.url'?" in wrong.err


def test_a_config_error_names_its_file_before_the_table(run_gbdeploy, empty_dir):
    (empty_dir / "gbdeploy.yaml").write_text("release: {timeout: soon}\n")
    result = run_gbdeploy("config")
    assert result.code == 2
    first = result.err.splitlines()[0]
    assert "release.timeout" in first and str(empty_dir / "gbdeploy.yaml") in first
    assert result.err.count("release.timeout") == 1  # said once, not again after the table


def test_a_disabled_component_is_named_as_disabled(run_gbdeploy, empty_dir):
    (empty_dir / "gbdeploy.yaml").write_text("components: {botui: {enabled: false}}\n")
    result = run_gbdeploy("deploy", "botui", "--dry-run")
    assert result.code == 2
    assert "botui is disabled: components.botui.enabled is false" in result.err


# --- help texts and completion (issue 23, item 10) ---------------------------------------------
def test_command_summaries_are_whole_sentences(run_gbdeploy, empty_dir):
    lines = run_gbdeploy("--help").out.splitlines()
    rollback = next(line for line in lines if line.startswith("  rollback "))
    assert rollback.rstrip().endswith("restart it and check its health.")


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("status", "Usage: gbdeploy status [COMPONENT] [OPTIONS]"),
        ("runs", "Usage: gbdeploy runs [COMPONENT] [OPTIONS]"),
        ("wait", "Usage: gbdeploy wait (RUN_ID | --sha SHA) [OPTIONS]"),
        ("config", "Usage: gbdeploy config [KEY] [OPTIONS]"),
    ],
)
def test_help_shows_the_positional_forms(run_gbdeploy, empty_dir, command, usage):
    assert run_gbdeploy("help", command).out.splitlines()[0] == usage


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (["release"], ["api", "botserver"]),
        (["status", "bot"], ["api", "botserver"]),
        (["wait", "--component"], ["api", "botserver"]),
        (["rel"], None),  # a command is being typed: Invoke's own completion
    ],
)
def test_completion_offers_the_configured_components(run_gbdeploy, empty_dir, words, offered):
    (empty_dir / "gbdeploy.yaml").write_text(
        "components:\n  botui: {enabled: false}\n  api: {binary: /opt/gbo/bin/api}\n"
    )
    result = run_gbdeploy("--complete", "--", "gbdeploy", *words)
    assert result.code == 0, result.text
    if offered is None:
        assert "release" in result.out.split()
    else:
        assert result.out.split() == offered


@pytest.mark.slow  # a python process
def test_help_into_a_closed_pipe_is_not_an_internal_error(empty_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "gbdeploy", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=empty_dir,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before the help is written
    _, err = process.communicate(timeout=60)
    assert "internal error" not in err and "Traceback" not in err
