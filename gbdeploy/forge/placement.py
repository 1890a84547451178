"""Where a component's workflow lives and runs (`components.NAME.workflow_repo`).

    root        the root repository (forge.owner/forge.repo): the pointer push starts the run,
                whose commit is the root commit
    component   the submodule's own repository, named by its URL in .gitmodules (a relative URL
                such as `../BotServer.git` resolves against the root's repository on the forge,
                as git resolves it against the root's remote): the submodule push starts the
                run, whose commit is the submodule commit
    OWNER/REPO  that repository, with the component's semantics (submodule push, submodule
                commit) unless it is the root repository itself

The same workflow present in both repositories would deploy one release twice (the submodule
push starts one run, the pointer push the other): `check_single_placement` refuses that.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import Component, ForgeSettings, Settings
from ..errors import PreflightError, UsageError
from ..git_repos import GitCommand, run_git

WORKFLOW_DIR = ".forgejo/workflows"
Placement = Literal["root", "component"]
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?P<path>.+)$")


@dataclass(frozen=True)
class WorkflowHome:
    """The repository a component's workflow runs in, and which commit its runs carry."""

    placement: Placement
    owner: str
    repo: str
    why: str  # how it was found, for messages

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def forge(self, settings: ForgeSettings) -> ForgeSettings:
        return replace(settings, owner=self.owner, repo=self.repo)

    def run_sha(self, *, root_sha: str, submodule_sha: str) -> str:
        return root_sha if self.placement == "root" else submodule_sha


def placement_of(settings: Settings, component: Component) -> Placement:
    """`root` when `component`'s workflow lives in the root repository: `workflow_repo: root`, or
    the root repository named as OWNER/REPO (in any case: the forge's names ignore it)."""
    where = component.workflow_repo
    if where in ("root", "component"):
        return where  # type: ignore[return-value]
    owner, _, repo = where.partition("/")
    forge = settings.forge
    same = (owner.lower(), repo.lower()) == (forge.owner.lower(), forge.repo.lower())
    return "root" if same else "component"


def workflow_home(settings: Settings, component: Component, root: Path | None) -> WorkflowHome:
    """Where `component`'s workflow runs. `root` (the root repository) is needed only for
    `component`, to read the submodule's URL."""
    where = component.workflow_repo
    forge = settings.forge
    if where == "root":
        return WorkflowHome("root", forge.owner, forge.repo, "the root repository (forge.repo)")
    if where == "component":
        url = submodule_url(root, component)
        owner, repo = repository_of_url(url, forge)
        return WorkflowHome(
            "component", owner, repo, f"the submodule's repository ({url} in .gitmodules)"
        )
    owner, _, repo = where.partition("/")
    if placement_of(settings, component) == "root":
        return WorkflowHome("root", owner, repo, f"workflow_repo {where} (the root repository)")
    return WorkflowHome("component", owner, repo, f"workflow_repo {where}")


def submodule_url(root: Path | None, component: Component) -> str:
    key = f"components.{component.name}.workflow_repo"
    if root is None:
        raise UsageError(
            f"{key} is `component`: its repository is named by the submodule's URL in the root "
            "repository's .gitmodules, and no root repository was found",
            hint=f"run from the root repository, or set {key} to OWNER/REPO",
        )
    path = component.submodule or component.name
    listed = run_git(
        GitCommand(
            root, ("config", "--file", ".gitmodules", "--get-regexp", r"^submodule\..*\.path$")
        )
    )
    for line in listed.stdout.splitlines():
        name_key, _, value = line.partition(" ")
        if value.strip() == path:
            name = name_key.removeprefix("submodule.").removesuffix(".path")
            url = run_git(
                GitCommand(root, ("config", "--file", ".gitmodules", f"submodule.{name}.url"))
            )
            if url.ok and url.stdout.strip():
                return url.stdout.strip()
    raise UsageError(
        f"{key} is `component`, but {root}/.gitmodules has no URL for the submodule {path}",
        hint=f"set {key} to OWNER/REPO, or components.{component.name}.submodule to its path",
    )


def repository_of_url(url: str, forge: ForgeSettings) -> tuple[str, str]:
    """OWNER and REPO on the forge for a submodule URL; relative URLs resolve against the root
    repository's place on the forge."""
    if url.startswith(("./", "../")):
        path = posixpath.normpath(posixpath.join(f"/{forge.owner}/{forge.repo}", url))
    elif _SCP_LIKE.match(url):
        path = _SCP_LIKE.match(url)["path"]  # type: ignore[index]
    else:
        path = re.sub(r"^[a-z][a-z0-9+.-]*://[^/]*", "", url)
    parts = [p for p in path.rstrip("/").split("/") if p]
    if len(parts) < 2:
        raise UsageError(
            f"cannot tell the forge repository (OWNER/REPO) from the submodule URL {url!r}",
            hint="set the component's workflow_repo to OWNER/REPO",
        )
    return parts[-2], parts[-1].removesuffix(".git")


# --- which repositories hold the workflow -------------------------------------------------------


def workflow_text(repo: Path, commit: str, workflow: str) -> str | None:
    """`.forgejo/workflows/<workflow>` at `commit` of the repository at `repo`, or None."""
    shown = run_git(GitCommand(repo, ("show", f"{commit}:{WORKFLOW_DIR}/{workflow}")))
    return shown.stdout if shown.ok else None


def check_single_placement(
    home: WorkflowHome,
    component: Component,
    *,
    root: Path,
    submodule: Path,
    sha: str,
    branch: str,
) -> str:
    """Refuse a release that would deploy twice (the workflow in both repositories, each
    started by a push to `branch`), or whose workflow is missing from its home; the workflow's
    text."""
    workflow = component.workflow
    in_root = workflow_text(root, "HEAD", workflow)
    in_component = workflow_text(submodule, sha, workflow)
    root_file = f"{WORKFLOW_DIR}/{workflow} in the root repository"
    component_file = f"{component.submodule}/{WORKFLOW_DIR}/{workflow} (the submodule's repository)"
    key = f"components.{component.name}.workflow_repo"
    if (
        in_root is not None
        and in_component is not None
        and starts_on_push(in_root, branch)
        and starts_on_push(in_component, branch)
    ):
        keep = "root" if home.placement == "root" else "component"
        drop = component_file if keep == "root" else root_file
        raise PreflightError(
            f"{workflow} is in both placements, each started by a push to {branch}: {root_file} "
            f"and {component_file}. The submodule push would start one run and the pointer push "
            "the other, deploying this release twice; nothing was pushed",
            hint=f"{key} is {component.workflow_repo}: remove {drop} (or its push trigger), "
            "then release again",
        )
    text = in_root if home.placement == "root" else in_component
    if text is None and home.placement == "component":
        raise PreflightError(
            f"{key} is {component.workflow_repo} ({home.full_name}), but {component.submodule} "
            f"has no {WORKFLOW_DIR}/{workflow} at {sha[:12]}: no run would start; nothing was "
            "pushed",
            hint="render it with `gbdeploy workflows` and commit it in the component's "
            "repository, or set workflow_repo: root",
        )
    return text or ""


def starts_on_push(text: str, branch: str) -> bool:
    """Whether a workflow's `on:` has a push trigger for `branch` (paths aside)."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    if not isinstance(data, dict):
        return False
    triggers = data.get("on", data.get(True))
    if isinstance(triggers, str):
        return triggers == "push"
    if isinstance(triggers, list):
        return "push" in triggers
    if not isinstance(triggers, dict) or "push" not in triggers:
        return False
    push = triggers["push"] or {}
    branches = push.get("branches") if isinstance(push, dict) else None
    if not branches:
        return True
    return any(fnmatch.fnmatchcase(branch, str(b)) for b in branches)
