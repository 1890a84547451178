"""`doctor`: the production invariants of the operations guide, checked on the LXD host.

`doctor` reaches the LXD host over ssh (`doctor.host`); host-level checks run there (`lxc config
show`, `zfs list`, `ufw`, `fail2ban-client`), and checks inside a container run through
`lxc exec NAME -- sh -c '…'` on that host. The checks live by place, as pyinfra keeps its facts
by subsystem: `host`, `system`, `components`, `proxy`, `dns_email`, `ci_runner`; `plan` lists
them, `runner` runs them over ssh, `report` prints them.

Only the few repairs that are safe and reversible run with `--fix`: the loopback ACCEPT rule in
the system container (inserted first in INPUT, then persisted), a component binary's owner, the
permissions of Vault's init.json, and the Caddyfile's `storage file_system` (added after a
backup, validated, reloaded; never when the file looks partial or fails to validate; rolled back
if reload fails). What needs a restart, a deletion or a judgement is printed as the fix.
"""

from __future__ import annotations

from .model import Check, Finding, Repair, Verdict
from .plan import build_checks, doctor_plan
from .report import DoctorReport, examine, render_table, run_doctor
from .runner import Doctor

__all__ = [
    "Check",
    "Doctor",
    "DoctorReport",
    "Finding",
    "Repair",
    "Verdict",
    "build_checks",
    "doctor_plan",
    "examine",
    "render_table",
    "run_doctor",
]
