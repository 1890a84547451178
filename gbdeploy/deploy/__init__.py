"""The runner-side deploy step, `rollback` and `status`, over SSH.

    layout      the target's paths and the exact shell scripts that change it
    engine      steps, execute, undo (a transaction; knows nothing of ssh)
    service     how a service stops, starts, is seen running (process, systemd)
    deployment  one deploy, rollback or recovery: its state and its steps
    health      whether what it started runs and answers healthy (part of a Deployment)
    state       what the target has: lock, journal, kept releases (parsed)
    outcome     how a failure is told
    command     `deploy`: the steps in order, the plan, the run
    switch      strategy `switch`: start beside, switch Caddy, drain, stop the old by pid
    rollback    `rollback` and `deploy --recover`
    status      `status` and `status --json`
    words       an error's first line or message, the local user
(The ssh session, the upload and the target's facts are `gbdeploy/remote/`.)

Where a change goes: how the service stops or starts → `service.py` (and, for the far end's
own functions, `gbdeploy/remote/far_end/procs.sh`, `lib.sh`); which files a deploy writes on the
target → `layout.py` (paths, and which steps a script calls) with the steps themselves in
`far_end/steps.sh`; the order of the steps → `command.py`; what a failure says → `outcome.py`.

Naming conventions:
    *_command   a whole script, ready to send: `layout.prelude(paths)` (the quoted variables
                B, N, P, L, J, S, R, W, G and the far end's library), then one call line per
                step (`layout.call`: a far-end function, every argument quoted); no shell
                beyond one-line calls lives in Python
    *_lines     a fragment of sh for such a script (it expects the prelude), no exit of its own
    *_function  an sh function definition (e.g. `stop_function`: `stop_service() {…}`)
    *_step      an `engine.Step`: the `engine.Command`s it sends (the same objects the plan
                prints, rendered as they are sent) and its undo
    probe_*     a read-only fact (`remote.probes`): its command and the parser of its output
The far end's words (what its scripts print, one per line: `acquired`, `held AGE`, `stopped
PIDS`, `launched PID`, `restored …`) are parsed next to the code that makes them print:
`state.parse_facts`, `service.parse_report`, `health.ServiceChecks.check`.

Importing `gbdeploy.deploy.layout` (as `verify` does) loads none of the deploy machinery: the
names below are loaded on first use.
"""

from __future__ import annotations

from typing import Any

# How a deploy puts the new binary in place (see `command.py`), one list for the command line
# and the rendered workflows.
STRATEGIES = ("staged", "seed", "switch")

_NAMES = {
    "find_artifact": "command",
    "run_deploy": "command",
    "run_rollback": "rollback",
    "Paths": "layout",
    "ComponentStatus": "status",
    "format_status": "status",
    "gather_status": "status",
    "run_status": "status",
}


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_NAMES[name]}"), name)
