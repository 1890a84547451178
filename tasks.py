"""`invoke release botserver` etc. from here, plus the project's own dev tasks."""

from __future__ import annotations

import shlex
import sys

from invoke import Collection, Context, task

from gbdeploy.tasks import namespace as gbdeploy_tasks

PYTHON = sys.executable


@task(help={"fast": "only the fast tier (-m 'not slow'): no sshd, git world, emulator or tool"})
def test(c: Context, k: str = "", fast: bool = False) -> None:
    """Run the test suite (the same command as README.md and CI), or with --fast its fast tier."""
    selector = f" -k {k!r}" if k else ""
    tier = " -m 'not slow' -n 0" if fast else ""  # one process: workers cost more than this tier
    c.run(f"{PYTHON} -m pytest -q{selector}{tier}", pty=False)


@task
def lint(c: Context) -> None:
    """ruff check and format check."""
    c.run(f"{PYTHON} -m ruff check .")
    c.run(f"{PYTHON} -m ruff format --check .")


@task(help={"runs": "rounds of gbdeploy against scp (medians are printed); default 3"})
def bench(c: Context, runs: int = 3) -> None:
    """A deploy of a real large ELF against OpenSSH scp on a loopback sshd: totals, downtime,
    unchanged redeploy, --list, per-step times, and the upload alone."""
    c.run(f"{PYTHON} bench/deploy_bench.py --runs {int(runs)}", pty=False)


@task(help={"only": "only these breaks, comma-separated (bench/mutations.py --list)"})
def mutations(c: Context, only: str = "") -> None:
    """Break each promise on purpose in a throw-away copy; every break must fail a test, and each
    is reported caught, SURVIVED or STALE (its text is no longer in the source)."""
    selection = f" --only {shlex.quote(only)}" if only else ""
    c.run(f"{PYTHON} bench/mutations.py{selection}", pty=False)


ns = Collection(test, lint, bench, mutations)
for name, gbdeploy_task in gbdeploy_tasks.tasks.items():
    ns.add_task(gbdeploy_task, name)
