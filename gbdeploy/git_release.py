"""The git half of `release`, as operations: a read-only preflight, then a plan of steps that each
declare the exact git command they run (so `--dry-run` prints them), then their execution.

    preflight(settings, component, root)  -> ReleaseState   reads only (`ls-remote`, never fetch)
    plan_release(settings, state)         -> ReleasePlan    pure
    execute_plan(plan, reporter)          -> ReleaseResult  pushes, commits, pushes

The order is the safety: the submodule commit reaches every submodule remote before the root
repo records it, so no root commit ever points at a commit a remote lacks. A failed step leaves a
state that running release again finishes (pushes of what is there are no-ops, the pointer is
committed only when it differs).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .config import Settings
from .errors import ConfigError, OperationFailed, PreflightError, PushRejected
from .output import Reporter

LOCAL_TIMEOUT = 60.0
NETWORK_TIMEOUT = 300.0


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
    """Run a git command; never prompts for credentials (a prompt would hang a release)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        completed = subprocess.run(
            ["git", *command.args],
            cwd=command.cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return GitResult(command, 124, "", f"`{command}` did not finish within {timeout:.0f}s")
    return GitResult(command, completed.returncode, completed.stdout, completed.stderr)


def _git(cwd: Path, *args: str, timeout: float = LOCAL_TIMEOUT) -> GitResult:
    return run_git(GitCommand(cwd, args), timeout=timeout)


def _line(repo: Path, *args: str) -> str:
    """A git command line for a hint, spelled the way the plan spells its commands."""
    return str(GitCommand(repo, args))


def _shown(path: Path) -> str:
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return str(path)
    return str(relative)


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
    top = _git(start, "rev-parse", "--show-toplevel")
    if not top.ok:
        raise PreflightError(
            f"{why} ({start}) is not inside a git repository",
            hint="run release from the root repository, or pass --root PATH",
        )
    if root is None and project_dir is None:
        superproject = _git(start, "rev-parse", "--show-superproject-working-tree")
        if superproject.ok and superproject.stdout.strip():
            return Path(superproject.stdout.strip())
    return Path(top.stdout.strip())


# --- preflight --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseState:
    """What the preflight found: both repositories are ready and every push fast-forwards."""

    component: str
    root: Path
    submodule_path: str
    branch: str
    sha: str
    short_sha: str
    recorded: str  # the submodule commit the root's HEAD records
    root_head: str
    remote_tips: dict[str, str | None] = field(default_factory=dict)  # "sub:origin" -> sha

    @property
    def submodule(self) -> Path:
        return self.root / self.submodule_path


def preflight(settings: Settings, component_name: str, root: Path) -> ReleaseState:
    """Refuse (PreflightError, exit 2, with the fix) unless a release can run to the end.

    Reads only: remote tips come from `git ls-remote`, so not even remote-tracking refs move.
    """
    component = settings.component(component_name)
    branch = settings.git.branch
    path = component.submodule or component.name
    submodule = root / path
    root_label = f"the root repository ({root.name})"

    _require_on_branch(root, branch, what=root_label)

    entry = _git(root, "ls-files", "--stage", "--", path).stdout.split()
    if not entry or entry[0] != "160000":
        raise PreflightError(
            f"{path!r} is not a submodule of {root} (components.{component.name}.submodule)",
            hint=f"set components.{component.name}.submodule to the submodule's path in the "
            "root repository, or pass --root with the right repository",
        )
    if not (submodule / ".git").exists():
        raise PreflightError(
            f"the submodule {path} is not checked out",
            hint=_line(root, "submodule", "update", "--init", "--", path),
        )

    changes = _git(submodule, "status", "--porcelain=v1").stdout.splitlines()
    if changes:
        raise PreflightError(
            f"{path} has uncommitted changes:\n" + _listing(changes),
            hint=f"commit them (or `{_line(submodule, 'stash', '-u')}`), then run release again",
        )

    _require_on_branch(submodule, branch, what=f"the submodule {path}")
    _require_remotes(root, settings.git.root_remotes, what=root_label)
    _require_remotes(
        submodule,
        settings.git.submodule_remotes,
        what=f"the submodule {path}",
        suggest_from=(root, path),
    )

    other = [line for line in _root_changes(root) if line[3:] != path]
    if other:
        raise PreflightError(
            f"the root repository has changes other than the {path} pointer:\n" + _listing(other),
            hint="commit or stash them first (`git stash`): the release commit records only the "
            f"{path} pointer",
        )

    sha = _git(submodule, "rev-parse", "HEAD").stdout.strip()
    short_sha = _git(submodule, "rev-parse", "--short", "HEAD").stdout.strip()
    root_head = _git(root, "rev-parse", "HEAD").stdout.strip()
    recorded = _git(root, "rev-parse", f"HEAD:{path}").stdout.strip()
    if recorded != sha and not _contains(submodule, sha, recorded):
        raise PreflightError(
            f"{path} at {short_sha} does not contain {recorded[:12]}, the commit the root "
            "repository records for it: releasing would drop commits",
            hint=f"bring them in (`{_line(submodule, 'merge', recorded[:12])}`, after a fetch "
            "if it is missing), then run release again",
        )

    tips: dict[str, str | None] = {}
    for remote in settings.git.submodule_remotes:
        tips[f"{path}:{remote}"] = _require_fast_forward(submodule, path, remote, branch, sha)
    for remote in settings.git.root_remotes:
        tips[f"root:{remote}"] = _require_fast_forward(root, root_label, remote, branch, root_head)

    return ReleaseState(
        component=component.name,
        root=root,
        submodule_path=path,
        branch=branch,
        sha=sha,
        short_sha=short_sha,
        recorded=recorded,
        root_head=root_head,
        remote_tips=tips,
    )


def _listing(lines: Sequence[str], limit: int = 10) -> str:
    shown = [f"    {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"    … and {len(lines) - limit} more")
    return "\n".join(shown)


def _require_on_branch(repo: Path, branch: str, *, what: str) -> None:
    head = _git(repo, "symbolic-ref", "--quiet", "HEAD")
    if head.ok and head.stdout.strip() == f"refs/heads/{branch}":
        return
    if not head.ok:
        sha = _git(repo, "rev-parse", "--short", "HEAD").stdout.strip()
        on_branch = _contains(repo, f"refs/heads/{branch}", "HEAD")
        hint = _line(repo, "switch", branch)
        if not on_branch:
            hint += f" && {_line(repo, 'merge', '--ff-only', sha)}  (keeps the commits made there)"
        raise PreflightError(f"{what} is on a detached HEAD ({sha}), not on {branch}", hint=hint)
    current = head.stdout.strip().removeprefix("refs/heads/")
    raise PreflightError(
        f"{what} is on branch {current!r}, not on {branch!r} (git.branch)",
        hint=f"{_line(repo, 'switch', branch)}  (and merge {current} into it if it should ship)",
    )


def _require_remotes(
    repo: Path,
    remotes: Sequence[str],
    *,
    what: str,
    suggest_from: tuple[Path, str] | None = None,
) -> None:
    present = set(_git(repo, "remote").stdout.split())
    for remote in remotes:
        if remote in present:
            continue
        url = _suggest_url(*suggest_from, remote) if suggest_from else None
        key = "git.submodule_remotes" if suggest_from else "git.root_remotes"
        raise PreflightError(
            f"{what} has no remote {remote!r} (from {key}; it has: "
            f"{', '.join(sorted(present)) or 'none'})",
            hint=_line(repo, "remote", "add", remote, url or "URL"),
        )


def _suggest_url(root: Path, path: str, remote: str) -> str | None:
    """The submodule's URL on `remote`, when .gitmodules has a relative URL (as gb does) and the
    root repository has that remote: resolved the way git resolves it against `origin`."""
    key = f"submodule.{path}.url"
    configured = _git(root, "config", "--file", ".gitmodules", "--get", key).stdout.strip()
    base = _git(root, "remote", "get-url", remote)
    if not configured.startswith(("./", "../")) or not base.ok:
        return None
    url = base.stdout.strip().rstrip("/")
    for part in configured.split("/"):
        if part == "..":
            if "/" not in url:
                return None
            url = url.rsplit("/", 1)[0]
        elif part not in ("", "."):
            url = f"{url}/{part}"
    return url


def _root_changes(root: Path) -> list[str]:
    """Changes to tracked files and submodule pointers (porcelain v1 lines, `XY path`); untracked
    files and dirty submodule working trees are not in a commit of the pointer, so not listed."""
    raw = _git(
        root, "status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=dirty"
    ).stdout
    entries = raw.split("\0")
    lines: list[str] = []
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if not entry:
            continue
        lines.append(entry)
        if entry[0] in "RC":  # a rename's source path follows as its own entry
            index += 1
    return lines


def _contains(repo: Path, descendant: str, ancestor: str) -> bool:
    """Whether `ancestor` is in the history of `descendant` (False when either is unknown)."""
    return _git(repo, "merge-base", "--is-ancestor", ancestor, descendant).ok


def _require_fast_forward(
    repo: Path, label: str, remote: str, branch: str, head: str
) -> str | None:
    """The remote's branch tip (None when it has no such branch); refuse if pushing `head` there
    would not fast-forward."""
    listed = _git(repo, "ls-remote", remote, f"refs/heads/{branch}", timeout=NETWORK_TIMEOUT)
    if not listed.ok:
        raise PreflightError(
            f"cannot read remote {remote!r} of {label}: {listed.stderr.strip()}",
            hint=f"check its URL (`{_line(repo, 'remote', 'get-url', remote)}`) and your access",
        )
    fields_ = listed.stdout.split()
    if not fields_:
        return None
    tip = fields_[0]
    if tip != head and not _contains(repo, head, tip):
        raise PreflightError(
            f"{label} {branch} is behind {remote} ({remote} has {tip[:12]}, which {head[:12]} "
            "does not contain): a push would not fast-forward",
            hint=f"{_line(repo, 'pull', '--rebase', remote, branch)}  (or merge), "
            "then run release again",
        )
    return tip


# --- the plan ----------------------------------------------------------------------------------

StepKind = Literal["push-submodule", "commit-pointer", "push-root"]


@dataclass(frozen=True)
class Step:
    name: str  # what the user reads: "push botserver to origin"
    kind: StepKind
    command: GitCommand
    remote: str | None = None


@dataclass(frozen=True)
class ReleasePlan:
    state: ReleaseState
    message: str | None  # the root commit's message; None when the pointer is already committed
    steps: tuple[Step, ...]

    @property
    def commands(self) -> list[str]:
        return [str(step.command) for step in self.steps]


def commit_message(settings: Settings, state: ReleaseState) -> str:
    try:
        return settings.git.message.format(
            component=state.component, short_sha=state.short_sha, sha=state.sha
        )
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(
            "git.message",
            f"cannot format {settings.git.message!r}: {error!r}",
            hint="use only {component}, {short_sha} and {sha}",
        ) from None


def plan_release(settings: Settings, state: ReleaseState) -> ReleasePlan:
    branch = state.branch
    refspec = f"refs/heads/{branch}:refs/heads/{branch}"
    root_name = state.root.name
    steps: list[Step] = [
        Step(
            f"push {state.submodule_path} to {remote}",
            "push-submodule",
            GitCommand(state.submodule, ("push", "--porcelain", remote, refspec)),
            remote,
        )
        for remote in settings.git.submodule_remotes
    ]
    message = None
    if state.recorded != state.sha:
        message = commit_message(settings, state)
        steps.append(
            Step(
                f"commit {state.submodule_path} pointer in {root_name}",
                "commit-pointer",
                GitCommand(state.root, ("commit", "-m", message, "--", state.submodule_path)),
            )
        )
    steps.extend(
        Step(
            f"push {root_name} to {remote}",
            "push-root",
            GitCommand(state.root, ("push", "--porcelain", remote, refspec)),
            remote,
        )
        for remote in settings.git.root_remotes
    )
    return ReleasePlan(state, message, tuple(steps))


# --- execution ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseResult:
    root_sha: str  # the root commit now on every root remote
    submodule_sha: str
    committed: bool  # False when the pointer was already committed


def execute_plan(plan: ReleasePlan, reporter: Reporter) -> ReleaseResult:
    state = plan.state
    pushed: dict[StepKind, list[str]] = {"push-submodule": [], "push-root": []}
    committed = False
    for step in plan.steps:
        with reporter.step(step.name) as record:
            if step.kind == "commit-pointer":
                result = run_git(step.command)
                if not result.ok:
                    raise OperationFailed(
                        f"`{step.command}` failed (exit {result.returncode}):\n"
                        f"{_indent(result.stderr or result.stdout)}\n"
                        f"  {state.submodule_path} {state.short_sha} is on every submodule "
                        f"remote; nothing was committed in {state.root.name}",
                        hint="fix the cause above, then run release again",
                    )
                committed = True
                record.detail = _git(state.root, "rev-parse", "--short", "HEAD").stdout.strip()
                continue
            assert step.remote is not None
            record.detail = _push(step, state, pushed[step.kind], committed=committed)
            pushed[step.kind].append(step.remote)
    root_sha = _git(state.root, "rev-parse", "HEAD").stdout.strip()
    return ReleaseResult(root_sha=root_sha, submodule_sha=state.sha, committed=committed)


def _push(step: Step, state: ReleaseState, done: list[str], *, committed: bool) -> str:
    """Run one push; the outcome for the user ("up to date", "a1b2c3d..e4f5a6b", "new branch"),
    or PushRejected naming the remote and where the commit already is."""
    assert step.remote is not None
    result = run_git(step.command, timeout=NETWORK_TIMEOUT)
    outcome = _porcelain_outcome(result.stdout)
    if result.ok and outcome is not None and outcome[0] != "!":
        flag, summary = outcome
        return "up to date" if flag == "=" else summary.strip("[]")
    reason = outcome[1] if outcome else f"exit {result.returncode}"
    git_says = _indent(result.stderr.strip() or result.stdout.strip())
    if step.kind == "push-submodule":
        what = f"{state.submodule_path} {state.branch} ({state.short_sha})"
        where = (
            f"{state.submodule_path} {state.short_sha} is on: {', '.join(done) or 'no remote yet'}"
            f"; nothing was committed in {state.root.name}"
        )
        again = (
            "it pushes what is missing (pushes already there are no-ops), then commits the "
            "pointer once"
        )
    else:
        root_sha = _git(state.root, "rev-parse", "--short", "HEAD").stdout.strip()
        what = f"{state.root.name} {state.branch} ({root_sha})"
        made = "was made" if committed else "was already"
        where = (
            f"{state.submodule_path} {state.short_sha} is on every submodule remote; the root "
            f"commit {root_sha} {made} in {state.root}, and is on: "
            f"{', '.join(done) or 'no remote yet'}"
        )
        again = "it does not commit again, it pushes the root commit"
    raise PushRejected(
        f"push of {what} to {step.remote} failed: {reason}\n{git_says}\n  {where}",
        remote=step.remote,
        pushed_to=list(done),
        hint=f"fix {step.remote} (see git's message above), then run "
        f"`gbdeploy release {state.component}` again: {again}",
    )


def _porcelain_outcome(stdout: str) -> tuple[str, str] | None:
    """(flag, summary) of the ref line of `git push --porcelain`: flag ` ` fast-forward, `*` new,
    `=` up to date, `!` rejected, `+` forced."""
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and len(parts[0]) == 1:
            return parts[0], parts[2]
    return None


def _indent(text: str) -> str:
    return "\n".join(f"    {line.rstrip()}" for line in text.strip().splitlines())
