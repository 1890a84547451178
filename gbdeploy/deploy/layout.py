"""The target's layout for one component, and the exact shell scripts that change it.

Paths on the target, for a component whose binary is B:

    B.new              the upload, hashed on the target while written (strategy `staged`)
    B.prev             the binary that ran before the last deploy (a hard link, or a copy)
    B.sha256           `SHA SIZE MTIME INODE` of B: its sha256, trusted while the rest match
    B.lock/holder      the deploy lock: built in B.lock.tmp.TOKEN, renamed into place (atomic)
    B.lock/was-running present while a deploy that found the service running holds the lock
    B.lock/session     the pid of the far end of the holder's session: while it runs, the
                       holder is still connected, and `--recover` leaves the lock alone
    B.lock/run.NAME/   claimed by the service script NAME as it begins (`pid`, then `done`), or
                       by the undo first, which then keeps that script from ever running
    B.journal          one JSON line per phase of the deploy in progress (locked, uploaded,
                       stopping, stopped, swapped, started, healthy, done); removed when it ends
                       cleanly. The undo reads it: it acts on what the target did, never on what
                       the deploy last heard
    B.start            how B was started (a sh recipe: directory, user, environment, command)
    B.prev.start       the same for B.prev: a restore starts the old binary exactly as it ran
    B.releases/SHA     the binaries that passed health (hard links), oldest first in
    B.releases/list    lines `SHA COMMIT TIME` in deploy order (the last `keep_releases`);
                       SHA.start beside each binary is its recipe
    B.deploys.log      one JSON line per deploy and rollback, appended

Every function here returns text; nothing connects. A script is the quoted variables and the far
end's library (`prelude`), then one call line per step: the steps are functions of
`remote/far_end/steps.sh` (and lib.sh, procs.sh), every value an argument through `quote`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from ..config import Component
from ..remote import far_end
from ..remote.connection import quote
from .service import run_as_prefix, service_of


@dataclass(frozen=True)
class Paths:
    binary: str

    @property
    def new(self) -> str:
        return f"{self.binary}.new"

    @property
    def prev(self) -> str:
        return f"{self.binary}.prev"

    @property
    def lock(self) -> str:
        return f"{self.binary}.lock"

    @property
    def holder(self) -> str:
        return f"{self.binary}.lock/holder"

    @property
    def was_running(self) -> str:
        return f"{self.binary}.lock/was-running"

    def lock_tmp(self, token: str) -> str:
        return f"{self.binary}.lock.tmp.{token}"

    @property
    def recipe(self) -> str:
        return f"{self.binary}.start"

    @property
    def journal(self) -> str:
        return f"{self.binary}.journal"

    @property
    def sidecar(self) -> str:
        return f"{self.binary}.sha256"

    @property
    def releases(self) -> str:
        return f"{self.binary}.releases"

    def release(self, sha256: str) -> str:
        return f"{self.binary}.releases/{sha256}"

    @property
    def deploy_log(self) -> str:
        return f"{self.binary}.deploys.log"

    @property
    def directory(self) -> str:
        return os.path.dirname(self.binary) or "/"


# --- small shell pieces
def variables(paths: Paths) -> str:
    """Shell variables every script starts with."""
    return "\n".join(
        [
            f"B={quote(paths.binary)}; N={quote(paths.new)}; P={quote(paths.prev)}",
            f"L={quote(paths.lock)}; J={quote(paths.journal)}; S={quote(paths.sidecar)}",
            f"R={quote(paths.releases)}; W={quote(paths.was_running)}",
            f"G={quote(paths.recipe)}",
        ]
    )


def prelude(paths: Paths, *, steps: bool = True) -> str:
    """What every script begins with: the quoted variables, then the far end's functions
    (`remote/far_end/procs.sh`, `lib.sh`, and `steps.sh` unless `steps` is False: a check that
    calls none of them). `-v` shows each once (`Reporter.shared`, `more_shared`)."""
    return f"{variables(paths)}\n{far_end.library(steps=steps)}"


def call(function: str, *arguments: object) -> str:
    """One call line of a far-end function, every argument quoted (a reserved word too, such as
    the phase `done`: sh reads it as a word there, shellcheck would not)."""
    return " ".join([function, *(_word(argument) for argument in arguments)])


_RESERVED = frozenset(
    [
        "!",
        "{",
        "}",
        "case",
        "do",
        "done",
        "elif",
        "else",
        "esac",
        "fi",
        "for",
        "if",
        "in",
        "then",
        "until",
        "while",
    ]
)


def _word(argument: object) -> str:
    text = str(argument)
    return f"'{text}'" if text in _RESERVED else quote(text)


# --- the preflight
def preflight_lines(component: Component, ssh_user: str, *, upload_kib: int | None) -> str:
    """Checks that print `fail KEY WHY` (steps.sh's `refuse`, which sets bad=1) for each problem;
    change nothing that matters (the log's directory and file are created, as the start would)."""
    key = f"components.{component.name}"
    lines = ["bad=0", call("check_user", f"{key}.user", component.user)]
    prefix = run_as_prefix(component, ssh_user)
    if prefix:
        lines.append(f"{call('check_run_as', f'{key}.run_as', prefix)} {prefix}")
    log = component.log_path
    lines.append(call("check_log", f"{key}.log", os.path.dirname(log) or "/", log))
    directory = os.path.dirname(component.binary) or "/"
    lines.append(call("check_directory", f"{key}.binary", directory, component.binary))
    if upload_kib is not None:
        # B.new, plus room for the journal, the recipes, the release list and the deploy log.
        lines.append(call("check_room", f"{key}.binary", int(upload_kib) + WORKING_KIB, directory))
    lines += service_of(component).preflight_lines(key)
    lines.append('echo "machine $(uname -m)"')
    return "\n".join(lines)


WORKING_KIB = 64  # what a deploy writes besides binaries: journal, recipes, lists, logs


def begin_command(
    paths: Paths,
    *,
    holder: str,
    journal: str,
    preflight: str,
    steal: str | None = None,
    force: bool = False,
) -> str:
    """One exchange: take the lock (holder written in a temp dir, then renamed into place),
    start the journal, run the preflight, and report what the target has.

    Prints `orphan PID` for each service script of a stale lock waited for (`steal`),
    `held AGE` + `holder …` + `journal …` lines when another holds the lock (or
    `lockfail WHY`); else `acquired`, any `fail KEY WHY` (then the lock is released again and
    `released` printed), `machine M`, `current SHA|none`, `release …` lines, `journal …` lines
    of an interrupted deploy found without a lock. `steal`: the token of a stale lock to take over
    (`--recover`); only a lock still holding that token is removed.
    """
    lines = [prelude(paths), f"T={quote(paths.lock_tmp(_token_of(holder)))}"]
    if steal:
        lines.append(steal_lines(steal, force=force))
    lines += [
        call("take_lock", holder, journal),
        preflight,
        "end_preflight",
        "current_sha",
        "list_releases",
    ]
    return "\n".join(lines)


HOLDERLESS = "-"  # `steal` for a lock without a holder record
ORPHAN_WAIT = 180  # seconds --recover waits for a service script a killed deploy left running


def steal_lines(steal: str, *, force: bool = False) -> str:
    """Remove the stale lock whose holder has token `steal` (HOLDERLESS: one without a holder)
    once the service scripts it began have ended, and only when the far end of its session has
    ended too, unless `force` (steps.sh's `steal_stale`)."""
    return call("steal_stale", steal, int(force), ORPHAN_WAIT * 10)


def steal_command(paths: Paths, steal: str, *, force: bool = False) -> str:
    return f"{prelude(paths)}\n{steal_lines(steal, force=force)}"


def _token_of(holder: str) -> str:
    return str(json.loads(holder)["token"])


# --- the service: stop, swap, start
# How the service itself stops, starts and is seen running is `service.py`'s; the scripts below
# place those fragments among the swap, the journal and the undo.
def write_recipe_lines(component: Component, ssh_user: str) -> str:
    """The recipe of the current config, as `$L/recipe`: what starts a binary that has none."""
    return call("write_recipe", service_of(component).recipe(ssh_user))


def claim_lines(name: str, token: str) -> str:
    """The service script `name` begins only while the lock is this deploy's and its undo has not
    claimed it first (lib.sh's `claim`)."""
    return call("claim", name, token)


def stop_function(component: Component) -> str:
    """`stop_service`, which lib.sh's `restore` calls: the service's own stop (service.py)."""
    return "stop_service() { " + service_of(component).stop_lines() + "; }"


HEALTH_MARK = "__gbdeploy_health__"


def state_command(paths: Paths, component: Component, health: str | None = None) -> str:
    """Prints `up PID:USER…` (the processes running B that descend from what this deploy
    launched, or any when it launched nothing: a systemd unit, an unchanged binary), `starting`
    (its launcher still runs), or `down`. With `health` (a probe's command), in the same exchange:
    a HEALTH_MARK line, that command's output, and `HEALTH_MARK STATUS`."""
    return "\n".join(
        [
            prelude(paths, steps=False),  # sent with every health check: the smallest
            f"resolve {quote(component.binary)}",
            "state",
            *(
                [f"echo {HEALTH_MARK}", f"( {health}\n)", f'echo "{HEALTH_MARK} $?"']
                if health
                else []
            ),
        ]
    )


def owner(component: Component) -> str:
    # `user:` gives the user's login group, which is what `chown user:user` means where they match.
    return component.user + ":"


def service_command(
    paths: Paths,
    component: Component,
    ssh_user: str,
    *,
    sha256: str,
    token: str,
    name: str,
    source: str | None = None,
    stop: bool = True,
    start: bool = True,
) -> str:
    """The steps that touch the running service, fused into one script with its own undo:
    keep B as B.prev (and among the releases if it is not there yet) → stop → `source` (a
    release's path; default B.new) renamed over B, with its recipe → chown/chmod → start
    detached.

    Prints `was-running 0|1`, the stop's outcome, then `launched PID`. On a failure after the stop
    it puts B.prev back, starts it as it was started if it ran, and exits 3 (prints `restored` or
    `restore-failed`). Signals are ignored: once begun it finishes, even if the deploy that sent
    it is killed; it begins only once (lib.sh's `claim`). `stop=False` (strategy seed, second
    half): the service was stopped by an earlier script."""
    lines = [
        "trap '' HUP INT TERM PIPE",
        prelude(paths),
        call("service_begin", name, token, service_of(component).recipe(ssh_user)),
        stop_function(component),
    ]
    if stop:
        lines += [
            "keep_previous",
            *service_of(component).running_before_stop_lines(),
            "stop_noting",
        ]
    else:
        lines.append("stopped_before")
    if start:
        lines += [call("stage", source or ""), call("swap_in", sha256, owner(component))]
    return "\n".join(lines)


def restore_command(
    paths: Paths,
    component: Component,
    ssh_user: str,
    *,
    token: str,
    names: list[str],
    wait_seconds: float,
) -> str:
    """The undo of the service scripts `names`, decided on what the target committed: each script
    that never began is claimed (it will never run), one that runs is waited for. Then, only while
    the lock is still this deploy's and the journal shows the service was touched (`stopping`)
    and not yet kept (`healthy`, `done`): stop what runs, put B.prev back, start it as it was
    started if it ran. Prints `not-ours` (the deploy ended on the target, or was taken over),
    `untouched`, `kept`, `restored had=… up=…`, or `restore-failed` (exit 1)."""
    looks = max(1, int(wait_seconds / 0.1))
    return "\n".join(
        [
            "trap '' HUP INT TERM PIPE",
            prelude(paths),
            *(call("claim_or_wait", name, looks) for name in names),
            stop_function(component),
            call("undo_service", token, service_of(component).recipe(ssh_user)),
        ]
    )


def healthy_command(paths: Paths, token: str) -> str:
    """Journal `healthy` (the new binary passed health and settled): from here an undo keeps it."""
    return "\n".join([prelude(paths), f"{call('ours', token)} && phase healthy"])


def remove_new_command(paths: Paths) -> str:
    return f"rm -f -- {quote(paths.new)}"


# --- the end
# Whole values (always `fullmatch`: `$` would match before a last newline).
COMMIT = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,99}")  # --commit, a commit in B.releases/list
SHA256 = re.compile(r"[0-9a-f]{64}")


def finish_command(
    paths: Paths,
    *,
    token: str,
    log_entry: dict[str, object],
    started_epoch: int,
    keep_release: tuple[str, str, int] | None = None,
    phase: str = "done",
) -> str:
    """One exchange at the end, only while the lock is still this deploy's (else it prints
    `lock not ours` and changes nothing): record the phase; when the binary passed health, keep
    it among the releases with its recipe (`keep_release` = (sha256, commit, how many to keep);
    commit `unknown` keeps the one the list knows for that sha256) and print `kept` (or
    `keep-failed WHY`); append the deploy log line (its `duration` measured here); end the
    journal and release the lock. Once begun it finishes (signals ignored)."""
    entry = json.dumps(log_entry, sort_keys=True)
    assert entry.endswith("}")
    lines = [
        "trap '' HUP INT TERM PIPE",
        prelude(paths),
        call("finish_phase", token, _phase(phase)),
    ]
    if keep_release:
        sha, commit, keep = keep_release
        if not SHA256.fullmatch(sha) or not COMMIT.fullmatch(commit):
            raise ValueError(f"not a release: {sha!r} {commit!r}")
        lines.append(call("keep_release", sha, commit, int(keep)))
    lines += [
        call("log_deploy", entry[:-1], int(started_epoch), paths.deploy_log),
        # After a restore that failed, the journal stays: `status` and the next deploy say so.
        *([] if "restore" in phase else ["end_journal"]),
        "unlock",
    ]
    return "\n".join(lines)


def _phase(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z-]*", name):
        raise ValueError(f"not a phase: {name!r}")
    return name


def remove_lock_command(paths: Paths) -> str:
    return f"rm -rf -- {quote(paths.lock)}"
