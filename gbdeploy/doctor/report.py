"""`gbdeploy doctor [--fix] [--json]`: examine, repair the safe ones, print the table or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Settings
from ..errors import DoctorFailed
from ..output import Reporter
from .ci_runner import forge_version_finding
from .model import Finding
from .plan import build_checks, require_host
from .runner import Doctor


@dataclass
class DoctorReport:
    findings: list[Finding]
    changes: list[str] = field(default_factory=list)
    repairable: frozenset[str] = frozenset()  # the checks `--fix` knows a safe repair for

    @property
    def failed(self) -> list[str]:
        return [f.check for f in self.findings if f.status == "fail"]

    def hint(self, *, fixed: bool) -> str:
        can_fix = [name for name in self.failed if name in self.repairable]
        if can_fix and not fixed:
            return (
                "the fix column says what to do; `gbdeploy doctor --fix` repairs the safe ones "
                f"({', '.join(can_fix)})"
            )
        return (
            "the fix column says what to do; these need a person (doctor --fix changes only "
            "what is safe to change unattended)"
        )


def examine(
    settings: Settings, *, fix: bool = False, say: Callable[[str], None] | None = None
) -> DoctorReport:
    """Run every check (and, with `fix`, the safe repairs, then every check again)."""
    checks = build_checks(settings)
    with Doctor(settings) as doctor:
        findings = doctor.examine(checks)
        changes: list[str] = []
        if fix and any(f.status == "fail" for f in findings):
            changes = doctor.repair(checks, findings)
            for line in changes:
                if say:
                    say(line)
            if any(line.startswith("changed:") for line in changes):
                findings = doctor.examine(checks)
    forge = forge_version_finding(settings)
    if forge is not None:
        findings = [*findings, forge]
    repairable = frozenset(c.name for c in checks if c.repair is not None)
    return DoctorReport(findings, changes, repairable)


def render_table(findings: list[Finding]) -> list[str]:
    width = max([len("CHECK"), *(len(f.check) for f in findings)])
    lines = [f"{'CHECK':<{width}}  STATUS  SAW"]
    for f in findings:
        mark = {"pass": "pass", "fail": "FAIL", "skip": "skip"}[f.status]
        lines.append(f"{f.check:<{width}}  {mark:<6}  {f.saw}")
        if f.fix:
            lines.append(f"{'':<{width}}          fix: {f.fix}")
    counts = {s: sum(1 for f in findings if f.status == s) for s in ("pass", "fail", "skip")}
    lines.append(
        f"{len(findings)} checks: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    )
    return lines


def run_doctor(
    settings: Settings, reporter: Reporter, *, fix: bool = False, as_json: bool = False
) -> None:
    """`gbdeploy doctor [--fix] [--json]`: prints the table (or the JSON list), then raises
    DoctorFailed (exit 1) if any check fails."""
    require_host(settings.doctor)
    # With --json, stdout holds only the JSON list: what --fix changed goes to stderr.
    notes = Reporter(stream=sys.stderr, secrets=reporter.secrets) if as_json else reporter
    report = examine(settings, fix=fix, say=notes.say)
    if as_json:
        reporter.say(json.dumps([f.to_json() for f in report.findings], indent=2))
    else:
        if report.changes:
            reporter.say()
        for line in render_table(report.findings):
            reporter.say(line)
    if report.failed:
        raise DoctorFailed(
            f"doctor: {len(report.failed)} of {len(report.findings)} checks failed: "
            + ", ".join(report.failed),
            failed=report.failed,
            hint=report.hint(fixed=fix),
        )
