"""Who released and which CI run deployed: what a deploy (or rollback) records beside its own
facts, so `history` can say more than the runner's account.

On a Forgejo runner every step has its run's context in the environment (forgejo-runner's
`withGithubEnv`): GITHUB_RUN_ID (the run's id, as API paths take it), GITHUB_RUN_NUMBER (its
number in the web UI), GITHUB_SERVER_URL (the forge), GITHUB_REPOSITORY, GITHUB_ACTOR (the forge
user whose push or dispatch started it), GITHUB_SHA and GITHUB_WORKSPACE (the checkout). The
person is the git identity of the commit the run built (`release` makes the root pointer commit
with the releaser's identity), or, by hand outside CI, the local git identity.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Mapping

GIT_TIMEOUT = 5.0  # seconds; a git that hangs must not hold a deploy


def ci_run(environ: Mapping[str, str]) -> dict[str, object] | None:
    """The CI run this process runs in: id, web UI number, repository and URL."""
    run_id = environ.get("GITHUB_RUN_ID", "").strip()
    if not run_id.isdigit():
        return None
    number = environ.get("GITHUB_RUN_NUMBER", "").strip()
    server = environ.get("GITHUB_SERVER_URL", "").strip().rstrip("/")
    repository = environ.get("GITHUB_REPOSITORY", "").strip()
    run: dict[str, object] = {"id": int(run_id)}
    if number.isdigit():
        run["number"] = int(number)
    if repository:
        run["repository"] = repository
    if server and repository and number.isdigit():
        run["url"] = f"{server}/{repository}/actions/runs/{number}"  # the web UI's address
    return run


def released_by(environ: Mapping[str, str], cwd: str) -> dict[str, str]:
    """The person: the forge user that started the run, and a git identity."""
    who: dict[str, str] = {}
    actor = environ.get("GITHUB_ACTOR", "").strip()
    if actor:
        who["forge_user"] = actor
    sha = environ.get("GITHUB_SHA", "").strip()
    if sha:
        workspace = environ.get("GITHUB_WORKSPACE") or cwd
        identity = _git(workspace, "log", "-1", "--format=%an <%ae>", sha, "--")
    else:
        name = _git(cwd, "config", "user.name")
        email = _git(cwd, "config", "user.email")
        identity = f"{name} <{email}>" if name and email else name
    if identity:
        who["git"] = identity
    return who


CONTEXT_VARIABLES = (
    "GITHUB_RUN_ID",
    "GITHUB_RUN_NUMBER",
    "GITHUB_SERVER_URL",
    "GITHUB_REPOSITORY",
    "GITHUB_ACTOR",
    "GITHUB_SHA",
    "GITHUB_WORKSPACE",
)


def record_fields() -> dict[str, object]:
    """The fields a deploy log line gets from this process's environment (git asked once for
    each environment: a deploy writes several candidate log lines)."""
    context = tuple((name, os.environ.get(name, "")) for name in CONTEXT_VARIABLES)
    return dict(_record_fields(context, os.getcwd()))


@functools.cache
def _record_fields(context: tuple[tuple[str, str], ...], cwd: str) -> dict[str, object]:
    environ = {name: value for name, value in context if value}
    fields: dict[str, object] = {}
    person = released_by(environ, cwd)
    if person:
        fields["released_by"] = person
    run = ci_run(environ)
    if run:
        fields["ci_run"] = run
    return fields


def describe_person(fields: Mapping[str, object]) -> str | None:
    """`Ana <ana@example.org> (forge: ana)` from a log line's `released_by`, if it has one."""
    person = fields.get("released_by")
    if not isinstance(person, Mapping):
        return None
    git, forge = person.get("git"), person.get("forge_user")
    if git and forge:
        return f"{git} (forge: {forge})"
    return str(git or forge) if git or forge else None


def _git(directory: str, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", directory, *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
