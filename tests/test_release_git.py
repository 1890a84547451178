"""The git half of `release`, on real repositories: bare remotes, a root repo and its submodule."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import TEST_TOKEN, CliResult

from gbdeploy_sandbox.gitworld import GitWorld, git

PUSH = "push --porcelain {remote} refs/heads/main:refs/heads/main"


def release(run_gbdeploy, *extra: str):
    return run_gbdeploy("release", "botserver", "--no-wait", *extra)


# --- the happy path ----------------------------------------------------------------------------


def test_release_pushes_submodule_everywhere_then_commits_pointer_and_pushes_root(
    git_world: GitWorld, run_gbdeploy
):
    old_alm_root = git_world.ref("alm", "gb")
    origin_root = git_world.ref("origin", "gb")
    sha = git_world.commit_in_submodule("Fix the login")

    result = release(run_gbdeploy)

    assert result.code == 0, result.text
    assert git_world.ref("origin", "botserver") == sha
    assert git_world.ref("alm", "botserver") == sha
    new_root = git_world.ref("alm", "gb")
    assert git(git_world.bare("alm", "gb"), "rev-parse", f"{new_root}^") == old_alm_root
    assert git_world.pointer("alm") == sha
    assert git_world.message("alm", "gb") == f"Update submodule botserver to {sha[:7]} ({sha})"
    assert git_world.ref("origin", "gb") == origin_root  # root_remotes is [alm]
    assert git(git_world.root, "rev-parse", "HEAD") == new_root
    assert f"root commit: {new_root}" in result.out
    for step in ("push botserver to origin", "push botserver to alm", "push gb to alm"):
        assert f"→ {step} … ok" in result.out
    assert "commit botserver pointer in gb … ok" in result.out


def test_release_twice_makes_one_commit_and_the_second_run_only_confirms(
    git_world: GitWorld, run_gbdeploy
):
    git_world.commit_in_submodule()
    assert release(run_gbdeploy).code == 0
    commits = git_world.count("alm", "gb")

    again = release(run_gbdeploy)

    assert again.code == 0, again.text
    assert git_world.count("alm", "gb") == commits
    assert "commit botserver pointer" not in again.out
    assert again.out.count("up to date") == 3


def test_pointer_already_committed_is_not_committed_again_but_root_is_pushed(
    git_world: GitWorld, run_gbdeploy
):
    sha = git_world.commit_in_submodule()
    git(git_world.root, "commit", "-q", "-m", "pointer by hand", "--", "botserver")
    local = git(git_world.root, "rev-parse", "HEAD")

    result = release(run_gbdeploy)

    assert result.code == 0, result.text
    assert git(git_world.root, "rev-parse", "HEAD") == local
    assert git_world.ref("alm", "gb") == local
    assert git_world.pointer("alm") == sha
    assert git_world.message("alm", "gb") == "pointer by hand"


def test_untracked_files_in_the_root_do_not_block_and_are_not_committed(
    git_world: GitWorld, run_gbdeploy
):
    git_world.commit_in_submodule()
    (git_world.root / "notes.txt").write_text("scratch\n")

    result = release(run_gbdeploy)

    assert result.code == 0, result.text
    files = git(git_world.bare("alm", "gb"), "ls-tree", "--name-only", "main").split()
    assert "notes.txt" not in files


def test_release_as_a_program_from_a_subdirectory_finds_config_and_root(git_world: GitWorld):
    """`python -m gbdeploy` in a real process, started inside the submodule's src/."""
    sha = git_world.commit_in_submodule()
    result = subprocess.run(
        [sys.executable, "-m", "gbdeploy", "release", "botserver", "--no-wait"],
        cwd=git_world.submodule / "src",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert git_world.pointer("alm") == sha
    assert f"root commit: {git_world.ref('alm', 'gb')}" in result.stdout
    assert TEST_TOKEN not in result.stdout + result.stderr


def test_root_option_from_outside_any_repository(
    git_world: GitWorld, run_gbdeploy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sha = git_world.commit_in_submodule()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = release(run_gbdeploy, "--root", str(git_world.root))

    assert result.code == 0, result.text
    assert git_world.pointer("alm") == sha


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_prints_the_exact_git_commands_and_changes_no_ref(
    git_world: GitWorld, run_gbdeploy
):
    sha = git_world.commit_in_submodule()
    before = git_world.refs()
    status = git(git_world.root, "status", "--porcelain")

    result = release(run_gbdeploy, "--dry-run")

    assert result.code == 0, result.text
    assert git_world.refs() == before
    assert git(git_world.root, "status", "--porcelain") == status
    message = f"Update submodule botserver to {sha[:7]} ({sha})"
    expected = [
        "git -C botserver " + PUSH.format(remote="origin"),
        "git -C botserver " + PUSH.format(remote="alm"),
        f"git commit -m '{message}' -- botserver",
        "git " + PUSH.format(remote="alm"),
    ]
    numbered = re.findall(r"^ +\d+\. (.*)$", result.out, flags=re.MULTILINE)
    assert numbered == expected
    assert "nothing is changed" in result.out


def test_an_unreachable_forge_refuses_the_release_before_any_push(
    git_world: GitWorld, run_gbdeploy
):
    git_world.commit_in_submodule()
    before = git_world.refs()

    result = run_gbdeploy("release", "botserver")  # forge.url is http://127.0.0.1:9

    assert result.code == 2
    assert "nothing was pushed" in result.err
    assert "--no-wait" in result.err
    assert git_world.refs() == before


def test_dry_run_also_prints_the_forge_requests_without_the_token(
    git_world: GitWorld, run_gbdeploy
):
    git_world.commit_in_submodule()
    before = git_world.refs()

    result = run_gbdeploy("release", "botserver", "--dry-run")

    assert result.code == 0, result.text
    assert git_world.refs() == before
    assert "GET http://127.0.0.1:9/api/v1/repos/GeneralBots/gb  " in result.out
    assert "Authorization: token ***" in result.out
    assert "/actions/workflows/botserver.yaml/dispatches" in result.out
    assert TEST_TOKEN not in result.text


# --- refusals (exit 2, nothing changed) --------------------------------------------------------


def world_state(world: GitWorld) -> dict[str, str]:
    """Every ref of every remote and clone, and what `git status` shows in the two clones."""
    state = world.refs()
    for label, path in (("root", world.root), ("submodule", world.submodule)):
        state[f"status {label}"] = git(path, "status", "--porcelain", "--untracked-files=all")
    return state


@dataclass(frozen=True)
class Ran(CliResult):
    before: dict[str, str] = field(default_factory=dict)  # world_state before the run


@pytest.fixture
def run_gbdeploy(run_gbdeploy, git_world: GitWorld):
    """conftest's runner; each result also holds the world as it was before (`assert_refused`)."""

    def run(*args: str) -> Ran:
        before = world_state(git_world)
        result = run_gbdeploy(*args)
        return Ran(result.code, result.out, result.err, before)

    return run


def assert_refused(world: GitWorld, result: Ran, *needles: str) -> None:
    """Exit 2 with each of `needles` on stderr, and nothing pushed, committed or changed."""
    assert result.code == 2, result.text
    for needle in needles:
        assert needle in result.err, f"{needle!r} not in:\n{result.err}"
    assert world_state(world) == result.before, "the refusal pushed or changed something"


def test_unknown_component_is_refused(git_world: GitWorld, run_gbdeploy):
    result = run_gbdeploy("release", "botbanana", "--no-wait")
    assert_refused(git_world, result, "unknown component 'botbanana'", "botserver")


def test_detached_submodule_head_is_refused_with_the_switch_command(
    git_world: GitWorld, run_gbdeploy
):
    # the clone is as `git submodule update` leaves it: detached HEAD
    before = git_world.refs()
    result = release(run_gbdeploy)
    assert_refused(git_world, result, "detached HEAD", "hint: git -C botserver switch main")
    assert git_world.refs() == before


def test_commits_made_on_a_detached_head_get_a_hint_that_keeps_them(
    git_world: GitWorld, run_gbdeploy
):
    sha = git_world.commit_in_submodule(on_branch=False)
    result = release(run_gbdeploy)
    assert_refused(
        git_world,
        result,
        "git -C botserver switch main && git -C botserver merge --ff-only " + sha[:7],
    )


def test_submodule_on_another_branch_is_refused(git_world: GitWorld, run_gbdeploy):
    git(git_world.submodule, "switch", "-q", "-c", "feature")
    result = release(run_gbdeploy)
    assert_refused(git_world, result, "branch 'feature'", "git -C botserver switch main")


def test_root_on_another_branch_is_refused(git_world: GitWorld, run_gbdeploy):
    git_world.commit_in_submodule()
    git(git_world.root, "switch", "-q", "-c", "wip")
    result = release(run_gbdeploy)
    assert_refused(git_world, result, "root repository", "branch 'wip'", "hint: git switch main")


@pytest.mark.parametrize("kind", ["modified", "staged", "untracked"])
def test_uncommitted_changes_in_the_submodule_are_refused(
    git_world: GitWorld, run_gbdeploy, kind: str
):
    git_world.commit_in_submodule()
    if kind == "untracked":
        (git_world.submodule / "forgotten.rs").write_text("// new\n")
    else:
        (git_world.submodule / "Cargo.toml").write_text("[package]\nname = 'changed'\n")
        if kind == "staged":
            git(git_world.submodule, "add", "Cargo.toml")
    before = git_world.refs()

    result = release(run_gbdeploy)

    assert_refused(git_world, result, "botserver has uncommitted changes", "stash -u")
    assert git_world.refs() == before


def test_changes_in_the_root_besides_the_pointer_are_refused(git_world: GitWorld, run_gbdeploy):
    git_world.commit_in_submodule()
    (git_world.root / "README.md").write_text("edited\n")
    result = release(run_gbdeploy)
    assert_refused(git_world, result, "changes other than the botserver pointer", "README.md")


def test_missing_submodule_remote_is_refused_with_the_url_to_add(git_world: GitWorld, run_gbdeploy):
    git_world.commit_in_submodule()
    git(git_world.submodule, "remote", "remove", "alm")
    url = git_world.bare("alm", "botserver")
    result = release(run_gbdeploy)
    assert_refused(
        git_world, result, "no remote 'alm'", f"hint: git -C botserver remote add alm {url}"
    )


def test_missing_root_remote_is_refused(git_world: GitWorld, run_gbdeploy):
    git_world.commit_in_submodule()
    git(git_world.root, "remote", "remove", "alm")
    result = release(run_gbdeploy)
    assert_refused(
        git_world,
        result,
        "root repository (gb) has no remote 'alm'",
        "hint: git remote add alm URL",
    )


@pytest.mark.parametrize(("repo", "shown"), [("botserver", "git -C botserver"), ("gb", "git")])
def test_branch_behind_a_remote_is_refused_without_fetching(
    git_world: GitWorld, run_gbdeploy, repo: str, shown: str
):
    git_world.commit_in_submodule()
    git_world.commit_in_bare("alm", repo)
    before = git_world.refs()

    result = release(run_gbdeploy)

    assert_refused(
        git_world,
        result,
        "is behind alm",
        "would not fast-forward",
        f"{shown} pull --rebase alm main",
    )
    assert git_world.refs() == before  # not even remote-tracking refs moved


def test_submodule_older_than_the_recorded_pointer_is_refused(git_world: GitWorld, run_gbdeploy):
    git_world.commit_in_submodule()
    git(git_world.root, "commit", "-q", "-m", "pointer", "--", "botserver")
    git(git_world.submodule, "reset", "-q", "--hard", "HEAD~1")
    result = release(run_gbdeploy)
    assert_refused(git_world, result, "releasing would drop commits")


def test_component_whose_submodule_is_not_one_is_refused(git_world: GitWorld, run_gbdeploy):
    git_world.write_config("components:\n  botserver:\n    submodule: nothere\n")
    result = release(run_gbdeploy)
    assert_refused(
        git_world, result, "'nothere' is not a submodule", "components.botserver.submodule"
    )


def test_commit_message_with_an_unknown_placeholder_is_a_config_error(
    git_world: GitWorld, run_gbdeploy
):
    git_world.commit_in_submodule()
    git_world.write_config("git:\n  message: 'Bump {component} to {version}'\n")
    before = git_world.refs()
    result = release(run_gbdeploy)
    assert_refused(git_world, result, "git.message", "{short_sha}")
    assert git_world.refs() == before


# --- rejected pushes (exit 1) and finishing the job by running again ---------------------------


def test_rejected_submodule_push_names_the_remote_and_commits_nothing(
    git_world: GitWorld, run_gbdeploy
):
    old = git_world.ref("alm", "botserver")
    root_head = git(git_world.root, "rev-parse", "HEAD")
    alm_root = git_world.ref("alm", "gb")
    sha = git_world.commit_in_submodule()
    git_world.reject_pushes("alm", "botserver", "frozen for the audit")

    result = release(run_gbdeploy)

    assert result.code == 1, result.text
    assert "push of botserver main" in result.err
    assert "to alm failed" in result.err
    assert "rejected: frozen for the audit" in result.err  # git's own words
    assert f"botserver {sha[:7]} is on: origin" in result.err
    assert "nothing was committed in gb" in result.err
    assert "hint: fix alm" in result.err
    assert git_world.ref("origin", "botserver") == sha
    assert git_world.ref("alm", "botserver") == old
    assert git(git_world.root, "rev-parse", "HEAD") == root_head
    assert git_world.ref("alm", "gb") == alm_root
    assert "→ push botserver to alm … FAILED" in result.out

    git_world.accept_pushes("alm", "botserver")
    again = release(run_gbdeploy)

    assert again.code == 0, again.text
    assert git_world.ref("alm", "botserver") == sha
    assert (
        git_world.count("alm", "gb")
        == int(git(git_world.root, "rev-list", "--count", root_head)) + 1
    )
    assert git_world.pointer("alm") == sha


def test_rejected_root_push_is_finished_by_running_again_with_one_commit(
    git_world: GitWorld, run_gbdeploy
):
    commits = git_world.count("alm", "gb")
    sha = git_world.commit_in_submodule()
    git_world.reject_pushes("alm", "gb")

    result = release(run_gbdeploy)

    assert result.code == 1, result.text
    made = git(git_world.root, "rev-parse", "HEAD")
    assert "to alm failed" in result.err
    assert f"the root commit {made[:7]} was made in" in result.err
    assert git_world.ref("alm", "botserver") == sha
    assert git_world.count("alm", "gb") == commits

    git_world.accept_pushes("alm", "gb")
    again = release(run_gbdeploy)

    assert again.code == 0, again.text
    assert git_world.ref("alm", "gb") == made  # the same commit: none made the second time
    assert git_world.count("alm", "gb") == commits + 1


def test_the_token_never_appears_in_output(git_world: GitWorld, run_gbdeploy):
    git_world.commit_in_submodule()
    # git's stderr is part of the error: make it carry the token, as a misconfigured URL could
    git_world.reject_pushes("origin", "botserver", TEST_TOKEN)

    result = release(run_gbdeploy)

    assert result.code == 1
    assert TEST_TOKEN not in result.text
    assert "rejected: ***" in result.err


def test_without_config_or_root_the_superproject_of_a_submodule_is_the_root(
    git_world: GitWorld, monkeypatch: pytest.MonkeyPatch
):
    from gbdeploy.git_repos import find_root

    monkeypatch.chdir(git_world.submodule / "src")
    assert find_root(None, None) == git_world.root
    assert find_root(str(git_world.root), None) == git_world.root


# --- the git identity, checked before any push ------------------------------------------------


@pytest.mark.parametrize("keys", [("user.name",), ("user.email",), ("user.name", "user.email")])
def test_a_missing_git_identity_is_refused_before_any_push_with_the_config_line(
    git_world: GitWorld, run_gbdeploy, keys: tuple[str, ...]
):
    git_world.commit_in_submodule()
    for key in keys:
        git(git_world.root, "config", "--unset", key)
    before = git_world.refs()
    head = git(git_world.root, "rev-parse", "HEAD")

    result = release(run_gbdeploy)

    assert_refused(git_world, result, f"git has no {' and '.join(keys)}", "nothing was pushed")
    if "user.name" in keys:
        assert "git config --global user.name 'Your Name'" in result.err
    if "user.email" in keys:
        assert "git config --global user.email you@example.com" in result.err
    assert git_world.refs() == before
    assert git(git_world.root, "rev-parse", "HEAD") == head


def test_an_identity_from_gits_environment_variables_is_enough(
    git_world: GitWorld, run_gbdeploy, monkeypatch: pytest.MonkeyPatch
):
    sha = git_world.commit_in_submodule()
    git(git_world.root, "config", "--unset", "user.name")
    git(git_world.root, "config", "--unset", "user.email")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "CI")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "CI")
    monkeypatch.setenv("EMAIL", "ci@example.invalid")

    result = release(run_gbdeploy)

    assert result.code == 0, result.text
    assert git_world.pointer("alm") == sha
    assert git(git_world.bare("alm", "gb"), "log", "-1", "--format=%an <%ae>") == (
        "CI <ci@example.invalid>"
    )


def test_no_identity_is_needed_when_the_pointer_is_already_committed(
    git_world: GitWorld, run_gbdeploy
):
    sha = git_world.commit_in_submodule()
    git(git_world.root, "commit", "-q", "-m", "pointer by hand", "--", "botserver")
    git(git_world.root, "config", "--unset", "user.name")

    result = release(run_gbdeploy)

    assert result.code == 0, result.text
    assert git_world.pointer("alm") == sha


def test_behind_a_fetched_remote_says_by_how_many_commits(git_world: GitWorld, run_gbdeploy):
    git_world.commit_in_submodule()
    git_world.commit_in_bare("alm", "botserver", "one")
    git_world.commit_in_bare("alm", "botserver", "two")
    git(git_world.submodule, "fetch", "-q", "alm")
    before = git_world.refs()

    result = release(run_gbdeploy)

    assert_refused(git_world, result, "is behind alm by 2 commits")
    assert git_world.refs() == before


def test_recorded_commit_and_remote_url_read_the_repositories(git_world: GitWorld):
    from gbdeploy.git_repos import recorded_commit, remote_url

    sha = git_world.commit_in_submodule()
    git(git_world.root, "commit", "-q", "-m", "pointer", "--", "botserver")

    assert recorded_commit(git_world.root, "botserver") == sha
    assert recorded_commit(git_world.root, "README.md") is None
    assert recorded_commit(git_world.root, "nothere") is None
    assert remote_url(git_world.submodule, "alm") == str(git_world.bare("alm", "botserver"))
    assert remote_url(git_world.submodule, "nowhere") is None
