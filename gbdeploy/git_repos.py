"""Git repositories as gbdeploy reads and changes them, for `release` and the other commands.

What changes a repository is a `GitCommand`: an exact git command line that GitPython's `Git`
runs (`run_git`, never prompting for credentials) and a dry run prints. What only reads goes
through GitPython (`git.Repo`): the root repository, the commit it records for a submodule, a
remote's URL.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from git import Git, Repo
from git.exc import GitCommandNotFound, InvalidGitRepositoryError, NoSuchPathError

from .errors import PreflightError

LOCAL_TIMEOUT = 60.0
NETWORK_TIMEOUT = 300.0
# Never prompt for credentials: a prompt would hang a release.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}


@dataclass(frozen=True)
class GitCommand:
    """`git -C <cwd> <args…>`; `str()` is the shell line a user could paste (path shown relative
    to the current directory when it is inside it)."""

    cwd: Path
    args: tuple[str, ...]

    def __str__(self) -> str:
        shown = _shown(self.cwd)
        prefix = ["git"] if shown == "." else ["git", "-C", shown]
        return shlex.join([*prefix, *self.args])


@dataclass(frozen=True)
class GitResult:
    command: GitCommand
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_git(command: GitCommand, *, timeout: float = LOCAL_TIMEOUT) -> GitResult:
    """Run exactly `command` with GitPython's `Git`; a timeout kills it (exit status -9)."""
    try:
        status, stdout, stderr = Git(command.cwd).execute(
            ["git", *command.args],
            with_extended_output=True,
            with_exceptions=False,
            kill_after_timeout=timeout,
            env=GIT_ENV,
            strip_newline_in_stdout=False,
        )
    except GitCommandNotFound:
        raise PreflightError("git is not installed (or not on PATH)") from None
    return GitResult(command, int(status or 0), str(stdout), str(stderr))


def git_in(cwd: Path, *args: str, timeout: float = LOCAL_TIMEOUT) -> GitResult:
    return run_git(GitCommand(cwd, args), timeout=timeout)


def git_line(repo: Path, *args: str) -> str:
    """A git command line for a hint, spelled the way the plan spells its commands."""
    return str(GitCommand(repo, args))


def _shown(path: Path) -> str:
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return str(path)
    return str(relative)


@contextmanager
def opened_repo(path: Path, what: str) -> Iterator[Repo]:
    """The repository at `path` (GitPython), closed afterwards."""
    try:
        repo = Repo(path)
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise PreflightError(f"{what} ({path}) is not a git repository") from None
    try:
        yield repo
    finally:
        repo.close()


# --- reading repositories (also for other commands) -------------------------------------------


def recorded_commit(root: Path, path: str) -> str | None:
    """The commit the root repository's HEAD records for the submodule at `path`, or None when
    HEAD has no submodule there."""
    with opened_repo(root, "the root repository") as repo:
        return recorded_in(repo, path)


def recorded_in(repo: Repo, path: str) -> str | None:
    try:
        item = repo.head.commit.tree / path
    except (KeyError, ValueError):
        return None
    return item.hexsha if item.type == "submodule" else None


def remote_url(repo_path: Path, remote: str) -> str | None:
    """The URL of `remote` in the repository at `repo_path`, or None when it has no such remote."""
    with opened_repo(repo_path, "the repository") as repo:
        names = {r.name for r in repo.remotes}
        return repo.remote(remote).url if remote in names else None


# --- finding the root repository ------------------------------------------------------------


def find_root(root: str | Path | None, project_dir: Path | None) -> Path:
    """The root repository: `--root`, else the directory holding gbdeploy.yaml, else the
    repository of the current directory (its superproject when that is a submodule)."""
    if root is not None:
        start, why = Path(root).expanduser(), "--root"
    elif project_dir is not None:
        start, why = project_dir, "the directory of gbdeploy.yaml"
    else:
        start, why = Path.cwd(), "the current directory"
    if not start.is_dir():
        raise PreflightError(f"{why} ({start}) is not a directory", hint="pass --root PATH")
    try:
        repo = Repo(start, search_parent_directories=True)
    except (InvalidGitRepositoryError, NoSuchPathError):
        repo = None
    if repo is None or repo.working_tree_dir is None:
        raise PreflightError(
            f"{why} ({start}) is not inside a git repository",
            hint="run release from the root repository, or pass --root PATH",
        )
    with repo:
        top = Path(repo.working_tree_dir)
        if root is None and project_dir is None:
            superproject = repo.git.rev_parse("--show-superproject-working-tree")
            if superproject.strip():
                return Path(superproject.strip())
    return top
