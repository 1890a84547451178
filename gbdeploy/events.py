"""Hooks and notifications around one deploy or rollback: what `deploy` and `rollback` wrap
their run in.

    with watching(settings, "botserver", reporter, action="deploy", ...) as watch:
        run_deploy(..., before_change=watch.before_change)

`before_change` is called by the deployment once the lock is held and the preflight passed: it
learns the facts there (the commit running now, the sha256 going out) and runs `pre_deploy`.
When the run ends, `post_deploy` or `on_failure` runs and the webhook is told; neither changes
the run's outcome or exit code.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from invoke import Exit

from . import hooks, notify
from .config import Settings, token_values
from .errors import GbdeployError, redact
from .hooks import DeployFacts
from .logs import tail_command
from .output import Reporter
from .remote.connection import Remote

if TYPE_CHECKING:  # the deploy machinery loads when a deploy runs, not with this module
    from .deploy.deployment import Deployment

LOG_LINES = 20  # of the service's log, in a failure's notification
ERROR_LIMIT = 4000  # characters of a failure's message in a notification


def run_url() -> str | None:
    """The CI run this process belongs to, from the variables forgejo-runner sets in a job."""
    server, repository = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    number = os.environ.get("GITHUB_RUN_NUMBER") or os.environ.get("GITHUB_RUN_ID")
    if not (server and repository and number):
        return None
    return f"{server.rstrip('/')}/{repository}/actions/runs/{number}"


@dataclass
class Watch:
    settings: Settings
    reporter: Reporter
    facts: DeployFacts
    run: Deployment | None = None

    def before_change(self, run: Deployment) -> None:
        self.run = run
        self.learn(run)
        command = self.settings.hooks.pre_deploy
        if command and self.facts.action == "deploy":
            hooks.pre_deploy(command, self.facts, self.reporter, cwd=self.settings.project_dir)

    def learn(self, run: Deployment) -> None:
        facts = self.facts
        current = run.facts.current
        running = next((r for r in run.facts.releases if r.sha256 == current), None)
        facts.from_commit = (running.commit or "unknown") if running else None
        if current and not running:
            facts.from_commit = "unknown"
        facts.to_commit = run.release.commit if run.release is not None else run.commit
        facts.sha256 = run.sha256
        facts.who = run.who

    def ended(self, error: BaseException | None) -> None:
        from .deploy.words import message

        facts, run = self.facts, self.run
        if error is None:
            facts.result = "unchanged" if run is not None and run.unchanged else "ok"
        else:
            facts.result = run.result_after_failure() if run is not None else "failed"
            if isinstance(error, KeyboardInterrupt):
                facts.result += " (interrupted)"
            facts.error = redact(message(error), *token_values())[:ERROR_LIMIT]
            if run is not None and run.touched and self.settings.notify.webhook:
                facts.log_tail = self.log_tail()
        name = "post_deploy" if error is None else "on_failure"
        command = getattr(self.settings.hooks, name)
        if command and facts.action == "deploy":
            hooks.after(name, command, facts, self.reporter, cwd=self.settings.project_dir)
        notify.send(self.settings.notify, facts, self.reporter)

    def log_tail(self) -> list[str]:
        """The service's last log lines; none when the target cannot be reached now."""
        component = self.settings.component(self.facts.component)
        target = self.settings.target_of(component)
        with suppress(GbdeployError, OSError), Remote(target, self.settings.ssh) as remote:
            result = remote.run(tail_command(component, LOG_LINES), check=False, timeout=30)
            if result.ok:
                return [redact(line, *token_values()) for line in result.stdout.splitlines()]
        return []


@contextmanager
def watching(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    action: str,
    strategy: str = "",
    commit: str | None = None,
    dry_run: bool = False,
) -> Iterator[Watch]:
    from .deploy.words import local_user

    comp = settings.component(component)  # an unknown component is bad input, not a deploy
    facts = DeployFacts(
        action=action,
        component=comp.name,
        target=comp.target,
        to_commit=commit,
        strategy=strategy or action,
        who=f"{local_user()}@{socket.gethostname()}",
        run_url=run_url(),
    )
    watch = Watch(settings, reporter, facts)
    if dry_run:
        yield watch
        _plan(settings, reporter, action)
        return
    try:
        yield watch
    except Exit as declined:
        if declined.code != 0:
            watch.ended(declined)
        raise  # exit 0: the person said no to the question, nothing was done or tried
    except BaseException as error:
        watch.ended(error)
        raise
    watch.ended(None)


@contextmanager
def notifying_release(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    root: str | None,
    dry_run: bool = False,
    no_wait: bool = False,
) -> Iterator[None]:
    """Tell the webhook how a release ended: the submodule commit the root recorded before → the
    one released, by whom (the git identity), and the result."""
    comp = settings.component(component)
    if dry_run or not settings.notify.webhook:
        yield
        if dry_run:
            _plan(settings, reporter, "release")
        return
    from .deploy.words import message

    facts = DeployFacts(action="release", component=comp.name, target=comp.target)
    facts.from_commit, facts.to_commit, facts.who = _release_facts(settings, comp.submodule, root)
    try:
        yield
    except BaseException as error:
        facts.result = _failure(error)
        facts.error = redact(message(error), *token_values())[:ERROR_LIMIT]
        notify.send(settings.notify, facts, reporter)
        raise
    facts.result = "pushed, not waited for" if no_wait else "ok"
    notify.send(settings.notify, facts, reporter)


def _failure(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    code = getattr(error, "exit_code", 1)
    return {3: "CI run failed", 4: "timed out waiting", 2: "refused"}.get(code, "failed")


def _release_facts(
    settings: Settings, submodule: str, root: str | None
) -> tuple[str | None, str | None, str]:
    """(recorded commit, submodule HEAD, `Name <email>`) as far as they can be read now; the
    release's own preflight says what is wrong with the repositories."""
    import git

    from . import git_repos
    from .deploy.words import local_user

    fallback = f"{local_user()}@{socket.gethostname()}"
    try:
        root_dir = git_repos.find_root(root, settings.project_dir)
        recorded = git_repos.recorded_commit(root_dir, submodule)
        head = git.Repo(root_dir / submodule).head.commit.hexsha
        reader = git.Repo(root_dir).config_reader()
        name = reader.get_value("user", "name", default="")
        email = reader.get_value("user", "email", default="")
    except (GbdeployError, git.GitError, ValueError, OSError):
        return None, None, fallback
    who = f"{name} <{email}>" if name and email else str(name or email or fallback)
    return recorded, head, who


def _plan(settings: Settings, reporter: Reporter, action: str) -> None:
    lines = []
    configured = settings.hooks
    if action == "deploy":
        for name in ("pre_deploy", "post_deploy", "on_failure"):
            command = getattr(configured, name)
            if command:
                lines.append(f"hooks.{name}: {command}  (not run in a dry run)")
    line = notify.plan_line(settings.notify)
    if line:
        lines.append(line)
    for text in lines:
        reporter.say(text)
