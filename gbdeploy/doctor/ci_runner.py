"""Checks in the CI runner container: the size of its build caches and their daily cleanup."""

from __future__ import annotations

from ..config import Settings
from ..forge.concurrency import forge_concurrency
from ..forge.placement import WORKFLOW_DIR, workflow_text
from ..output import human_bytes
from ..remote.connection import CommandResult, quote
from ..workflows import MAINTENANCE_WORKFLOW
from .daemons import describe, schedule_check
from .model import GIB, Check, Finding, Status, Verdict, output_of
from .parsers import ParseError, ScheduledJob, parse_du_bytes, parse_workflow_schedules


def cache_size_check(name: str, path: str, max_gb: float, container: str) -> Check:
    limit = int(max_gb * GIB)

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            if "No such file" in result.stderr:
                return Verdict("pass", f"{path} does not exist (nothing cached)")
            return Verdict("fail", f"du {path}: {output_of(result)}")
        size = parse_du_bytes(result.stdout)
        verdict: Status = "pass" if size <= limit else "fail"
        return Verdict(verdict, f"{path}: {human_bytes(size)} (limit {human_bytes(limit)})")

    return Check(
        f"ci.{name}-size",
        container,
        f"du -sb -- {quote(path)}",
        judge,
        f"run `gbdeploy maintain` on the runner (a daily cron), or clear {path} between builds",
    )


def cache_cleanup_check(
    settings: Settings, container: str, scheduled_elsewhere: tuple[ScheduledJob, ...] = ()
) -> Check:
    """A daily job cleans both caches: `gbdeploy maintain`, or commands naming each cache; the
    runner's cron and timers count, and `scheduled_elsewhere` (gbdeploy's own maintenance
    workflow, which Forgejo schedules on the runner)."""
    sccache_dir, cargo_home = settings.workflows.sccache_dir, settings.workflows.cargo_home
    caches = {
        "sccache": ("sccache", sccache_dir),
        "cargo": (cargo_home, "CARGO_HOME", "cargo cache", "cargo-cache", ".cargo/registry"),
    }

    def cleans(job: ScheduledJob, cache: str) -> bool:
        return "gbdeploy maintain" in job.command or any(
            word in job.command for word in caches[cache]
        )

    def judge(on_runner: tuple[ScheduledJob, ...]) -> Verdict:
        jobs = on_runner + scheduled_elsewhere
        daily = {c: [j for j in jobs if j.daily and cleans(j, c)] for c in caches}
        if all(daily.values()):
            shown = "; ".join(dict.fromkeys(describe(j[0]) for j in daily.values()))
            return Verdict("pass", f"daily: {shown}")
        missing = [c for c, found in daily.items() if not found]
        rarer = [describe(j) for j in jobs if not j.daily and any(cleans(j, c) for c in missing)]
        return Verdict(
            "fail",
            f"no daily cleanup of the {' and '.join(missing)} cache in {container}"
            + (f" (less often than daily: {'; '.join(rarer)})" if rarer else ""),
        )

    return schedule_check(
        "ci.cache-cleanup-daily",
        container,
        settings.doctor.cron_etc,
        judge,
        "commit gbdeploy's own runner-maintenance.yaml (`gbdeploy workflows` renders it; Forgejo "
        "runs `gbdeploy maintain` daily on the runner), or a daily cron job on the runner: "
        "`17 3 * * * gbdeploy maintain` (crontab -e), or a daily systemd timer running it",
    )


def maintenance_workflow_jobs(settings: Settings) -> tuple[ScheduledJob, ...]:
    """The schedule of gbdeploy's runner-maintenance.yaml as committed at HEAD of the root
    repository (where `gbdeploy workflows` writes it), which Forgejo runs; () without one."""
    if settings.project_dir is None:
        return ()
    text = workflow_text(settings.project_dir, "HEAD", MAINTENANCE_WORKFLOW)
    if text is None:
        return ()
    source = f"{WORKFLOW_DIR}/{MAINTENANCE_WORKFLOW} at HEAD"
    try:
        return parse_workflow_schedules(text, source)
    except ParseError:
        return ()  # not one Forgejo would schedule either


FORGE_VERSION_CHECK = "ci.forgejo-version"


def forge_version_finding(settings: Settings) -> Finding | None:
    """Which Forgejo the forge runs, judged by what it does to the rendered workflows'
    concurrency group (`forge.concurrency`); None without a token."""
    verdict = forge_concurrency(settings.forge)
    if verdict is None:
        return None
    fix = "upgrade the forge to Forgejo 14 or later" if verdict.status == "fail" else ""
    return Finding(FORGE_VERSION_CHECK, verdict.status, verdict.message, fix=fix)
