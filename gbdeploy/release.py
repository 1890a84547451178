"""`release COMPONENT`: the git half (git_release), then the CI half (wait for the run, verify).

Order, so that nothing is pushed unless the whole release can run:
    1. find the root repository, git preflight (read-only)
    2. where the workflow runs (`workflow_repo`), and that one release starts one run only
    3. unless --no-wait: check that the CI half can run (forge answers, token accepted; when a
       dispatch is the plan, that the token may dispatch — asked without side effects)
    4. --dry-run: print the plan and stop
    5. push the submodule everywhere, commit the pointer, push the root
    6. --no-wait: print the commit CI builds and stop; else wait for CI and verify the deploy
"""

from __future__ import annotations

import contextlib

from . import git_release, git_repos
from .config import Component, Settings
from .errors import CIRunFailed, ForgeAuthError, ForgeNotFound, ForgeUnavailable, PreflightError
from .forge.client import ForgeClient
from .forge.placement import WorkflowHome, check_single_placement, starts_on_push, workflow_home
from .forge.version import concurrency_notice
from .forge.waiting import RunSearch, find_run, planned_requests, wait_for_run
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
    """Release `component`; the commit that CI builds (the root commit, or the submodule commit
    when the workflow runs in the component's repository; None in a dry run that would make a
    new root commit)."""
    chosen = settings.component(component)
    root_dir = git_repos.find_root(root, settings.project_dir)
    with reporter.step(f"preflight {component}") as record:
        state = git_release.preflight(settings, component, root_dir)
        record.detail = f"{state.submodule_path} {state.branch} at {state.short_sha}"
    plan = git_release.plan_release(settings, state)
    home = workflow_home(settings, chosen, root_dir)
    text = check_single_placement(
        home,
        chosen,
        root=root_dir,
        submodule=state.submodule,
        sha=state.sha,
        branch=settings.git.branch,
    )
    with contextlib.ExitStack() as stack:
        client = None if no_wait else stack.enter_context(ForgeClient(home.forge(settings.forge)))
        may_dispatch = True
        if client is not None and not dry_run:
            may_dispatch = check_ci_ready(client, settings, chosen, reporter, dispatch=dispatch)
        dispatch = _decide_dispatch(
            home, chosen, text, settings.git.branch, dispatch, reporter, pushes=_pushes(home, plan)
        )

        if dry_run:
            _print_plan(plan, home, client, settings, chosen, reporter, dispatch, no_verify)
            if home.placement == "component":
                return state.sha
            return None if plan.message else state.root_head

        result = git_release.execute_plan(plan, reporter)
        run_sha = home.run_sha(root_sha=result.root_sha, submodule_sha=result.submodule_sha)
        if client is None:
            reporter.say(f"root commit: {result.root_sha}")
            built = "root commit" if home.placement == "root" else f"{component} commit"
            reporter.say(
                f"{component} {state.short_sha} is pushed; CI in {home.full_name} builds {built} "
                f"{run_sha[:12]} (follow it with `gbdeploy wait --sha {run_sha}`)"
            )
            return run_sha

        try:
            wait_and_verify(
                client,
                settings,
                component,
                reporter,
                run_sha=run_sha,
                submodule_sha=result.submodule_sha,
                dispatch=dispatch,
                may_dispatch=may_dispatch,
                no_verify=no_verify,
                timeout=timeout if timeout is not None else settings.release.timeout,
            )
        except CIRunFailed as error:
            raise CIRunFailed(
                error.message, hint=f"{error.hint}\n  {_still_running(component, state)}"
            ) from None
        return run_sha


def _still_running(component: str, state: git_release.ReleaseState) -> str:
    """After a failed run the target should still run the release before this one, which a plain
    `verify` (it expects the new commit) would call wrong."""
    before = state.recorded[:12]
    return (
        f"the target should still run {before}: check with `gbdeploy verify {component} --commit "
        f"{before}` (plain `verify` expects {state.short_sha}, which did not deploy)"
    )


def _print_plan(
    plan: git_release.ReleasePlan,
    home: WorkflowHome,
    client: ForgeClient | None,
    settings: Settings,
    component: Component,
    reporter: Reporter,
    dispatch: bool,
    no_verify: bool,
) -> None:
    """`--dry-run`: the git commands, then the API requests, then what verify would check."""
    state = plan.state
    reporter.plan(f"release {component.name}: git", plan.commands)
    if client is None:
        return
    root_sha = state.root_head if not plan.message else "NEW_ROOT_COMMIT"
    search = RunSearch(
        home.run_sha(root_sha=root_sha, submodule_sha=state.sha),
        component.workflow,
        settings.git.branch,
        dispatch,
    )
    reporter.plan(
        f"release {component.name}: Forgejo API ({home.full_name}, {home.why})",
        [str(line) for line in planned_requests(client, search)],
    )
    if not no_verify:
        reporter.say(
            f"then: verify {component.name} {state.short_sha} on its target over ssh "
            "(binary mtime, commit bytes, owner, process, health)"
        )


def _pushes(home: WorkflowHome, plan: git_release.ReleasePlan) -> bool:
    """Whether this release pushes something new to the repository where the workflow runs."""
    state = plan.state
    if home.placement == "root":
        tips = [v for k, v in state.remote_tips.items() if k.startswith("root:")]
        return plan.message is not None or any(tip != state.root_head for tip in tips)
    tips = [v for k, v in state.remote_tips.items() if not k.startswith("root:")]
    return any(tip != state.sha for tip in tips)


def _decide_dispatch(
    home: WorkflowHome,
    component: Component,
    workflow_text: str,
    branch: str,
    dispatch: bool,
    reporter: Reporter,
    *,
    pushes: bool,
) -> bool:
    """One release deploys once: with `--dispatch`, a workflow that this release's push starts
    is not dispatched again — its push run is the one to follow. When nothing new is pushed
    (a retry), the dispatch is the only run."""
    if dispatch and pushes and workflow_text and starts_on_push(workflow_text, branch):
        pusher = "pointer" if home.placement == "root" else "submodule"
        reporter.say(
            f"not dispatching {component.workflow}: it runs on a push to {branch} in "
            f"{home.full_name}, so the {pusher} push starts it and a dispatch would deploy this "
            "release twice; following the push run instead"
        )
        return False
    return dispatch


# --- the CI half ------------------------------------------------------------------------------


def check_ci_ready(
    client: ForgeClient,
    settings: Settings,
    component: Component,
    reporter: Reporter,
    *,
    dispatch: bool,
) -> bool:
    """Before anything is pushed: the forge answers and accepts the token for the repository
    where the workflow runs, and whether the token may dispatch (asked without dispatching).
    Exit 2 when it does not answer, refuses the token, or `--dispatch` was asked of a read-only
    token: nothing is pushed. Whether a dispatch is possible (the fallback when no push run
    appears)."""
    with reporter.step(f"forge {settings.forge.url} accepts the token for {client.repo_path}"):
        try:
            client.check_access()
            notice = concurrency_notice(client.server_version())
            if notice:
                reporter.say(f"note: {notice}")
            try:
                client.check_write_scope(component.workflow)
            except (ForgeAuthError, ForgeNotFound) as error:
                if dispatch:
                    raise
                reporter.say(
                    f"no dispatch possible ({error.message}): if no push run appears, release "
                    "stops instead of dispatching one"
                )
                return False
            return True
        except ForgeUnavailable as error:
            raise PreflightError(
                f"{error.message} — nothing was pushed",
                hint=f"check forge.url ({settings.forge.url}) in gbdeploy.yaml, or use "
                f"`gbdeploy release {component.name} --no-wait` to push without waiting for CI",
            ) from None
        except (ForgeAuthError, ForgeNotFound, PreflightError) as error:
            raise type(error)(f"{error.message} — nothing was pushed", hint=error.hint) from None


def wait_and_verify(
    client: ForgeClient,
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    run_sha: str,
    submodule_sha: str,
    dispatch: bool,
    no_verify: bool,
    timeout: float,
    may_dispatch: bool = True,
) -> None:
    """After the pushes: find (or dispatch) the CI run of `run_sha`, wait for it, then verify
    the deployed binary carries `submodule_sha`."""
    chosen = settings.component(component)
    resume = f"gbdeploy release {component}"
    with reporter.step(
        f"find the CI run of {run_sha[:12]} ({chosen.workflow} in {client.repo_path})"
    ) as record:
        run = find_run(
            client,
            run_sha,
            chosen.workflow,
            appear_timeout=settings.release.appear_timeout,
            dispatch=dispatch,
            ref=settings.git.branch,
            reporter=reporter,
            poll_interval=settings.release.poll_interval,
            may_dispatch=may_dispatch,
        )
        record.detail = f"run {run.id}" + (f" {run.html_url}" if run.html_url else "")
    with reporter.step(f"wait for run {run.id}") as record:
        finished = wait_for_run(
            client,
            run.id,
            timeout=timeout,
            poll_interval=settings.release.poll_interval,
            reporter=reporter,
            pickup_timeout=settings.release.appear_timeout,
            runner_label=settings.workflows.runs_on,
            resume=resume,
            resume_note=f"it pushes nothing new, waits for run {run.id} and verifies",
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
    reporter.say(
        f"released {component} {submodule_sha[:7]}: CI {finished.label} {finished.status}, "
        f"verified on {settings.target_of(chosen).ssh}"
        + (f" ({finished.html_url})" if finished.html_url else "")
    )
