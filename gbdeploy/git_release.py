"""The git half of `release`, as operations: a read-only preflight, then a plan of steps that each
declare the exact git command they run (so `--dry-run` prints them), then their execution.

    preflight(settings, component, root)  -> ReleaseState   reads only (`ls-remote`, never fetch)
    plan_release(settings, state)         -> ReleasePlan    pure
    execute_plan(plan, reporter)          -> ReleaseResult  pushes, commits, pushes

Repositories are read through GitPython (`git.Repo`: HEAD, branches, the submodule's recorded
commit, remotes and their URLs, ancestry); what changes them is a `GitCommand`, an exact git
command line that GitPython's `Git` runs and `--dry-run` prints (both from `git_repos`).

The order is the safety: the submodule commit reaches every submodule remote before the root
repo records it, so no root commit ever points at a commit a remote lacks. A failed step leaves a
state that running release again finishes (pushes of what is there are no-ops, the pointer is
committed only when it differs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from git import Repo
from git.exc import GitCommandError

from .config import Settings
from .errors import ConfigError, OperationFailed, PreflightError, PushRejected
from .git_repos import (
    NETWORK_TIMEOUT,
    GitCommand,
    git_in,
    git_line,
    opened_repo,
    recorded_in,
    run_git,
)
from .output import Reporter

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
    # each remote's tip of the branch before the release ("PATH:REMOTE" or "root:REMOTE"), None
    # where the remote has no such branch: what this release pushes anew
    remote_tips: dict[str, str | None] = field(default_factory=dict)

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

    tips: dict[str, str | None] = {}
    with opened_repo(root, root_label) as root_repo:
        _require_on_branch(root_repo, branch, what=root_label)
        recorded = recorded_in(root_repo, path)
        if recorded is None:
            raise PreflightError(
                f"{path!r} is not a submodule of {root} (components.{component.name}.submodule)",
                hint=f"set components.{component.name}.submodule to the submodule's path in the "
                "root repository, or pass --root with the right repository",
            )
        if not (submodule / ".git").exists():
            raise PreflightError(
                f"the submodule {path} is not checked out",
                hint=git_line(root, "submodule", "update", "--init", "--", path),
            )
        with opened_repo(submodule, f"the submodule {path}") as sub_repo:
            sha, short_sha = _check_submodule(settings, sub_repo, root_repo, path, recorded, tips)
        _require_remotes(root_repo, settings.git.root_remotes, what=root_label)
        other = [line for line in _root_changes(root_repo) if line[3:] != path]
        if other:
            raise PreflightError(
                f"the root repository has changes other than the {path} pointer:\n"
                + _listing(other),
                hint="commit or stash them first (`git stash`): the release commit records only "
                f"the {path} pointer",
            )
        if recorded != sha:
            _require_identity(root_repo, what=root_label)
        root_head = root_repo.head.commit.hexsha
        for remote in settings.git.root_remotes:
            tips[f"root:{remote}"] = _require_fast_forward(
                root_repo, root_label, remote, branch, root_head
            )
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


def _check_submodule(
    settings: Settings,
    repo: Repo,
    root_repo: Repo,
    path: str,
    recorded: str,
    tips: dict[str, str | None],
) -> tuple[str, str]:
    """The submodule's HEAD (full and short) once it is ready to push: clean, on the branch,
    with every remote, containing the recorded commit, and fast-forwarding every remote."""
    submodule = Path(str(repo.working_tree_dir))
    branch = settings.git.branch
    if repo.is_dirty(untracked_files=True):
        changes = repo.git.status("--porcelain=v1").splitlines()
        raise PreflightError(
            f"{path} has uncommitted changes:\n" + _listing(changes),
            hint=f"commit them (or `{git_line(submodule, 'stash', '-u')}`), then run release again",
        )
    _require_on_branch(repo, branch, what=f"the submodule {path}")
    _require_remotes(
        repo,
        settings.git.submodule_remotes,
        what=f"the submodule {path}",
        suggest_from=(root_repo, path),
    )
    sha = repo.head.commit.hexsha
    short_sha = repo.git.rev_parse("--short", "HEAD")
    if recorded != sha and not _contains(repo, sha, recorded):
        raise PreflightError(
            f"{path} at {short_sha} does not contain {recorded[:12]}, the commit the root "
            "repository records for it: releasing would drop commits",
            hint=f"bring them in (`{git_line(submodule, 'merge', recorded[:12])}`, after a fetch "
            "if it is missing), then run release again",
        )
    for remote in settings.git.submodule_remotes:
        tips[f"{path}:{remote}"] = _require_fast_forward(repo, path, remote, branch, sha)
    return sha, short_sha


def _listing(lines: Sequence[str], limit: int = 10) -> str:
    shown = [f"    {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"    … and {len(lines) - limit} more")
    return "\n".join(shown)


def _workdir(repo: Repo) -> Path:
    return Path(str(repo.working_tree_dir))


def _require_on_branch(repo: Repo, branch: str, *, what: str) -> None:
    where = _workdir(repo)
    if repo.head.is_detached:
        sha = repo.git.rev_parse("--short", "HEAD")
        local = f"refs/heads/{branch}"
        on_branch = local in {ref.path for ref in repo.branches} and _contains(repo, local, "HEAD")
        hint = git_line(where, "switch", branch)
        if not on_branch:
            hint += (
                f" && {git_line(where, 'merge', '--ff-only', sha)}  (keeps the commits made there)"
            )
        raise PreflightError(f"{what} is on a detached HEAD ({sha}), not on {branch}", hint=hint)
    current = repo.active_branch.name
    if current == branch:
        return
    raise PreflightError(
        f"{what} is on branch {current!r}, not on {branch!r} (git.branch)",
        hint=f"{git_line(where, 'switch', branch)}  "
        f"(and merge {current} into it if it should ship)",
    )


def _require_remotes(
    repo: Repo,
    remotes: Sequence[str],
    *,
    what: str,
    suggest_from: tuple[Repo, str] | None = None,
) -> None:
    present = {remote.name for remote in repo.remotes}
    for remote in remotes:
        if remote in present:
            continue
        url = _suggest_url(*suggest_from, remote) if suggest_from else None
        key = "git.submodule_remotes" if suggest_from else "git.root_remotes"
        raise PreflightError(
            f"{what} has no remote {remote!r} (from {key}; it has: "
            f"{', '.join(sorted(present)) or 'none'})",
            hint=git_line(_workdir(repo), "remote", "add", remote, url or "URL"),
        )


def _suggest_url(root: Repo, path: str, remote: str) -> str | None:
    """The submodule's URL on `remote`, when .gitmodules has a relative URL (as gb does) and the
    root repository has that remote: resolved the way git resolves it against `origin`."""
    try:
        configured = next((sm.url for sm in root.submodules if sm.path == path), "")
    except (ValueError, KeyError, OSError):  # no or unreadable .gitmodules
        return None
    if not configured.startswith(("./", "../")) or remote not in {r.name for r in root.remotes}:
        return None
    url = root.remote(remote).url.rstrip("/")
    for part in configured.split("/"):
        if part == "..":
            if "/" not in url:
                return None
            url = url.rsplit("/", 1)[0]
        elif part not in ("", "."):
            url = f"{url}/{part}"
    return url


def _root_changes(root: Repo) -> list[str]:
    """Changes to tracked files and submodule pointers (porcelain v1 lines, `XY path`); untracked
    files and dirty submodule working trees are not in a commit of the pointer, so not listed."""
    raw = root.git.status(
        "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=dirty"
    )
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


def _contains(repo: Repo, descendant: str, ancestor: str) -> bool:
    """Whether `ancestor` is in the history of `descendant` (False when either is unknown)."""
    try:
        return repo.is_ancestor(ancestor, descendant)
    except GitCommandError:
        return False


IDENTITY = (
    ("user.name", "Your Name", ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME")),
    ("user.email", "you@example.com", ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL")),
)


def _require_identity(repo: Repo, *, what: str) -> None:
    """The pointer commit needs an author and committer set by the user, not guessed by git from
    the host name: from git config, or from git's environment variables."""
    missing: list[tuple[str, str]] = []
    for key, example, variables in IDENTITY:
        configured = repo.git.config("--get", key, with_exceptions=False).strip()
        from_env = all(
            os.environ.get(v) or (v.endswith("EMAIL") and os.environ.get("EMAIL"))
            for v in variables
        )
        if not configured and not from_env:
            missing.append((key, example))
    if missing:
        keys = " and ".join(key for key, _ in missing)
        fix = " && ".join(
            git_line(_workdir(repo), "config", "--global", key, example) for key, example in missing
        )
        raise PreflightError(
            f"git has no {keys} for {what}: the release commit needs an author; nothing was pushed",
            hint=f"{fix}  (with your own name and address)",
        )


def _require_fast_forward(
    repo: Repo, label: str, remote: str, branch: str, head: str
) -> str | None:
    """Refuse if pushing `head` to the remote's branch would not fast-forward (a remote without
    the branch gets it new). Returns the remote's tip, None when it has no such branch."""
    where = _workdir(repo)
    listed = git_in(where, "ls-remote", remote, f"refs/heads/{branch}", timeout=NETWORK_TIMEOUT)
    if not listed.ok:
        raise PreflightError(
            f"cannot read remote {remote!r} of {label}: {listed.stderr.strip()}",
            hint=f"check its URL (`{git_line(where, 'remote', 'get-url', remote)}`) "
            "and your access",
        )
    fields_ = listed.stdout.split()
    if not fields_:
        return None
    tip = fields_[0]
    if tip != head and not _contains(repo, head, tip):
        behind = _count(repo, f"{head}..{tip}")
        by = f" by {behind} commit{'s' if behind != 1 else ''}" if behind else ""
        raise PreflightError(
            f"{label} {branch} is behind {remote}{by} ({remote} has {tip[:12]}, which "
            f"{head[:12]} does not contain): a push would not fast-forward",
            hint=f"{git_line(where, 'pull', '--rebase', remote, branch)}  (or merge), "
            "then run release again",
        )
    return tip


def _count(repo: Repo, revisions: str) -> int | None:
    """How many commits `A..B` holds; None when a commit is not known locally (never fetched)."""
    try:
        return sum(1 for _ in repo.iter_commits(revisions))
    except (GitCommandError, ValueError):
        return None


# --- the plan ----------------------------------------------------------------------------------

GitStepKind = Literal["push-submodule", "commit-pointer", "push-root"]


@dataclass(frozen=True)
class GitStep:
    """One push or commit of the release's git half (a deploy's step is `deploy.engine.Step`)."""

    name: str  # what the user reads: "push botserver to origin"
    kind: GitStepKind
    command: GitCommand
    remote: str | None = None


@dataclass(frozen=True)
class ReleasePlan:
    state: ReleaseState
    message: str | None  # the root commit's message; None when the pointer is already committed
    steps: tuple[GitStep, ...]

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
    steps: list[GitStep] = [
        GitStep(
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
            GitStep(
                f"commit {state.submodule_path} pointer in {root_name}",
                "commit-pointer",
                GitCommand(state.root, ("commit", "-m", message, "--", state.submodule_path)),
            )
        )
    steps.extend(
        GitStep(
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
    pushed: dict[GitStepKind, list[str]] = {"push-submodule": [], "push-root": []}
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
                record.detail = git_in(state.root, "rev-parse", "--short", "HEAD").stdout.strip()
                continue
            assert step.remote is not None
            record.detail = _push(step, state, pushed[step.kind], committed=committed)
            pushed[step.kind].append(step.remote)
    root_sha = git_in(state.root, "rev-parse", "HEAD").stdout.strip()
    return ReleaseResult(root_sha=root_sha, submodule_sha=state.sha, committed=committed)


def _push(step: GitStep, state: ReleaseState, done: list[str], *, committed: bool) -> str:
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
        root_sha = git_in(state.root, "rev-parse", "--short", "HEAD").stdout.strip()
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
