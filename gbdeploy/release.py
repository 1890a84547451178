"""`release COMPONENT`: the git half (git_release), then the CI half (wait for the run, verify).

Order, so that nothing is pushed unless the whole release can run:
    1. find the root repository, git preflight (read-only)
    2. unless --no-wait: check that the CI half can run (forge answers, token accepted)
    3. --dry-run: print the plan and stop
    4. push the submodule everywhere, commit the pointer, push the root
    5. --no-wait: print the root commit and stop; else wait for CI and verify the deploy
"""

from __future__ import annotations

from pathlib import Path

from . import git_release
from .config import Settings
from .errors import NotBuilt
from .output import Reporter


def run_release(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    no_wait: bool = False,
    no_verify: bool = False,
    dispatch: bool = False,
    timeout: float | None = None,
    root: str | None = None,
) -> str | None:
    """Release `component`; the root commit SHA that CI builds (None in a dry run that would
    make a new commit)."""
    settings.component(component)
    root_dir = git_release.find_root(root, settings.project_dir)
    with reporter.step(f"preflight {component}") as record:
        state = git_release.preflight(settings, component, root_dir)
        record.detail = f"{state.submodule_path} {state.branch} at {state.short_sha}"
    plan = git_release.plan_release(settings, state)

    if not no_wait:
        check_ci_ready(settings, component, reporter, dry_run=dry_run, dispatch=dispatch)

    if dry_run:
        reporter.plan(f"release {component}: git", plan.commands)
        if not no_wait:
            reporter.say("then: wait for the CI run of the root commit and verify the deploy")
        return None if plan.message else state.root_head

    result = git_release.execute_plan(plan, reporter)
    if no_wait:
        reporter.say(f"root commit: {result.root_sha}")
        reporter.say(
            f"{component} {state.short_sha} is pushed; CI builds root commit {result.root_sha[:12]}"
            f" (follow it with `gbdeploy wait --sha {result.root_sha}`)"
        )
        return result.root_sha

    wait_and_verify(
        settings,
        component,
        reporter,
        root_sha=result.root_sha,
        submodule_sha=result.submodule_sha,
        dispatch=dispatch,
        no_verify=no_verify,
        timeout=timeout if timeout is not None else settings.release.timeout,
    )
    return result.root_sha


# --- the CI half: boundaries the forge client plugs into -------------------------------------


def check_ci_ready(
    settings: Settings, component: str, reporter: Reporter, *, dry_run: bool, dispatch: bool
) -> None:
    """Before anything is pushed: the forge answers and accepts the token for the repository,
    and the component's workflow exists. Raises (exit 2) when the CI half could not run."""
    raise NotBuilt(
        "waiting for CI is not built yet: use --no-wait",
        hint=f"gbdeploy release {component} --no-wait  (nothing was pushed)",
    )


def wait_and_verify(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    root_sha: str,
    submodule_sha: str,
    dispatch: bool,
    no_verify: bool,
    timeout: float,
) -> None:
    """After the pushes: find (or dispatch) the CI run of `root_sha`, wait for it, then verify
    the deployed binary carries `submodule_sha`."""
    raise NotBuilt("waiting for CI is not built yet: use --no-wait")


def root_of(settings: Settings, root: str | None = None) -> Path:
    """The root repository release would use (for other commands that need it)."""
    return git_release.find_root(root, settings.project_dir)
