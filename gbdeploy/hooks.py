"""`hooks:` — local commands around a deploy, given the deploy's facts in `GBDEPLOY_*` variables.

    pre_deploy    once the target's lock is held and its preflight passed, before anything
                  changes; a non-zero exit stops the deploy (exit 2, nothing changed)
    post_deploy   after a deploy that ended healthy (or unchanged); a failure is a warning
    on_failure    after a deploy that failed, whatever the cause; a failure is a warning

Each runs with `/bin/sh -c` in the project directory (where gbdeploy.yaml is), with this
process's environment plus FACT_VARIABLES. Its output is shown under the deploy's step.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PreflightError
from .output import Reporter

# The variables a hook gets; none names a configuration key (a hook that runs gbdeploy itself
# must not have them read as configuration).
FACT_VARIABLES = (
    "GBDEPLOY_ACTION",
    "GBDEPLOY_COMPONENT",
    "GBDEPLOY_TARGET",
    "GBDEPLOY_FROM_COMMIT",
    "GBDEPLOY_TO_COMMIT",
    "GBDEPLOY_SHA256",
    "GBDEPLOY_STRATEGY",
    "GBDEPLOY_RESULT",
    "GBDEPLOY_WHO",
    "GBDEPLOY_RUN_URL",
)


@dataclass
class DeployFacts:
    """What is known of one deploy, rollback or release: for hooks and notifications."""

    action: str
    component: str
    target: str
    to_commit: str | None = None
    from_commit: str | None = None
    sha256: str | None = None
    strategy: str = ""
    result: str = ""
    who: str = ""
    run_url: str | None = None
    error: str = ""
    log_tail: list[str] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        values = (
            self.action,
            self.component,
            self.target,
            self.from_commit,
            self.to_commit,
            self.sha256,
            self.strategy,
            self.result,
            self.who,
            self.run_url,
        )
        return {name: value or "" for name, value in zip(FACT_VARIABLES, values, strict=True)}


def run_hook(
    name: str, command: str, facts: DeployFacts, reporter: Reporter, *, cwd: Path | None
) -> int:
    """Run one hook; its output goes under the current step. Returns its exit code."""
    reporter.say(f"hooks.{name}: {command}")
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            env={**os.environ, **facts.environment()},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
        )
    except OSError as error:  # the project directory vanished, /bin/sh missing
        reporter.say(f"  could not run: {error}")
        return 127
    for line in (done.stdout + done.stderr).splitlines():
        reporter.say(f"  {line}")
    return done.returncode


def pre_deploy(command: str, facts: DeployFacts, reporter: Reporter, *, cwd: Path | None) -> None:
    code = run_hook("pre_deploy", command, facts, reporter, cwd=cwd)
    if code != 0:
        raise PreflightError(
            f"{facts.component}: the pre_deploy hook exited {code}; the deploy was stopped "
            "before anything changed",
            hint="fix what the hook reports above (or the hook itself: hooks.pre_deploy in "
            "gbdeploy.yaml), then deploy again",
        )


def after(
    name: str, command: str, facts: DeployFacts, reporter: Reporter, *, cwd: Path | None
) -> None:
    """post_deploy or on_failure: a failure is a warning; the deploy's outcome stands."""
    code = run_hook(name, command, facts, reporter, cwd=cwd)
    if code != 0:
        reporter.say(f"warning: the {name} hook exited {code}; the deploy's result stands")
