"""Checks in the CI runner container: the size of its build caches and their daily cleanup."""

from __future__ import annotations

from ..connection import CommandResult, quote
from ..doctor_parsers import parse_du_bytes
from ..output import human_bytes
from .model import GIB, Check, Status, Verdict, output_of


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
