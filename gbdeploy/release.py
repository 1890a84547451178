"""`release COMPONENT`: the git half (git_release), then the CI half (wait for the run, verify).

Order, so that nothing is pushed unless the whole release can run:
    1. find the root repository, git preflight (read-only)
    2. unless --no-wait: check that the CI half can run (forge answers, token accepted)
    3. --dry-run: print the plan and stop
    4. push the submodule everywhere, commit the pointer, push the root
    5. --no-wait: print the root commit and stop; else wait for CI and verify the deploy
"""

from __future__ import annotations

from . import git_release
from .config import Settings
from .errors import ForgeUnavailable, PreflightError
from .forge import ForgeClient, find_run, wait_for_run
from .output import Reporter
from .verify import verify_deployed


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

    client = None if no_wait else ForgeClient(settings.forge)
    if client is not None and not dry_run:
        check_ci_ready(client, settings, component, reporter, dispatch=dispatch)

    if dry_run:
        reporter.plan(f"release {component}: git", plan.commands)
        if client is not None:
            root_sha = state.root_head if not plan.message else "NEW_ROOT_COMMIT"
            reporter.plan(
                f"release {component}: Forgejo API",
                client.plan_lines(
                    sha=root_sha,
                    workflow=settings.component(component).workflow,
                    ref=settings.git.branch,
                    dispatch=dispatch,
                ),
            )
            if not no_verify:
                reporter.say(
                    f"then: verify {component} {state.short_sha} on its target over ssh "
                    "(binary mtime, commit bytes, owner, process, health)"
                )
        return None if plan.message else state.root_head

    result = git_release.execute_plan(plan, reporter)
    if client is None:
        reporter.say(f"root commit: {result.root_sha}")
        reporter.say(
            f"{component} {state.short_sha} is pushed; CI builds root commit {result.root_sha[:12]}"
            f" (follow it with `gbdeploy wait --sha {result.root_sha}`)"
        )
        return result.root_sha

    wait_and_verify(
        client,
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


# --- the CI half ------------------------------------------------------------------------------


def check_ci_ready(
    client: ForgeClient, settings: Settings, component: str, reporter: Reporter, *, dispatch: bool
) -> None:
    """Before anything is pushed: the forge answers and accepts the token for the repository
    (with write access when we will dispatch). Exit 2 when it does not: nothing is pushed."""
    with reporter.step(f"forge {settings.forge.url} accepts the token for {client.repo_path}"):
        try:
            client.check_access(write=dispatch)
        except ForgeUnavailable as error:
            raise PreflightError(
                f"{error.message} — nothing was pushed",
                hint=f"check forge.url ({settings.forge.url}) in gbdeploy.yaml, or use "
                f"`gbdeploy release {component} --no-wait` to push without waiting for CI",
            ) from None


def wait_and_verify(
    client: ForgeClient,
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
    chosen = settings.component(component)
    with reporter.step(f"find the CI run of {root_sha[:12]} ({chosen.workflow})") as record:
        run = find_run(
            client,
            root_sha,
            chosen.workflow,
            appear_timeout=settings.release.appear_timeout,
            dispatch=dispatch,
            ref=settings.git.branch,
            reporter=reporter,
            poll_interval=settings.release.poll_interval,
        )
        record.detail = f"run {run.id}" + (f" {run.html_url}" if run.html_url else "")
    with reporter.step(f"wait for run {run.id}") as record:
        finished = wait_for_run(
            client,
            run.id,
            timeout=timeout,
            poll_interval=settings.release.poll_interval,
            reporter=reporter,
        )
        record.detail = finished.status
    if no_verify:
        reporter.say(
            f"not verified (--no-verify): check with `gbdeploy verify {component} "
            f"--commit {submodule_sha[:12]}`"
        )
        return
    verify_deployed(
        settings,
        chosen,
        submodule_sha,
        since=finished.started,
        timeout=settings.release.verify_timeout,
        reporter=reporter,
    )
