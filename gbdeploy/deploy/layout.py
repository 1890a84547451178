"""The target's layout for one component, and the exact shell scripts that change it.

Paths on the target, for a component whose binary is B:

    B.new              the upload, hashed on the target while written (strategy `staged`)
    B.prev             the binary that ran before the last deploy (a hard link, or a copy)
    B.sha256           `SHA SIZE MTIME INODE` of B: its sha256, trusted while the rest match
    B.lock/holder      the deploy lock: built in B.lock.tmp.TOKEN, renamed into place (atomic)
    B.lock/was-running present while a deploy that found the service running holds the lock
    B.journal          one JSON line per phase of the deploy in progress (locked, stopped,
                       swapped, started, healthy); removed when it ends cleanly
    B.releases/SHA     the binaries that passed health (hard links), newest last in
    B.releases/list    lines `SHA COMMIT TIME`; `rollback` goes down this list, never up
    B.deploys.log      one JSON line per deploy and rollback, appended

Every function here returns text; nothing connects. Every value goes through `quote`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from ..config import Component
from ..connection import quote
from ..errors import UsageError
from ..probes import FIND_PIDS, resolve_binary, stop_processes_command


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
    def journal(self) -> str:
        return f"{self.binary}.journal"

    @property
    def sidecar(self) -> str:
        return f"{self.binary}.sha256"

    @property
    def releases(self) -> str:
        return f"{self.binary}.releases"

    @property
    def release_list(self) -> str:
        return f"{self.binary}.releases/list"

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
        ]
    )


HELPERS = r"""sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum -- "$1" | cut -d' ' -f1
  elif command -v busybox >/dev/null 2>&1; then busybox sha256sum "$1" | cut -d' ' -f1
  elif command -v python3 >/dev/null 2>&1; then python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
  else echo "no sha256 tool (sha256sum busybox python3)" >&2; return 127
  fi
}
stat_of() { stat -c '%s %Y %i' -- "$1"; }
remember_sha() { printf '%s %s\n' "$1" "$(stat_of "$B")" > "$S.tmp" && mv -f -- "$S.tmp" "$S"; }
same_bytes() { [ "$1" -ef "$2" ] || ln -f -- "$1" "$2" 2>/dev/null || cp -p -- "$1" "$2"; }
rename_over() { if [ "$1" -ef "$2" ]; then rm -f -- "$1"; else mv -f -- "$1" "$2"; fi; }"""

PHASE = (
    'phase() { printf \'{"phase": "%s", "time": "%s"}\\n\' "$1" '
    '"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$J"; }'
)


def current_sha_lines() -> str:
    """Prints `current SHA` (from B.sha256 while size, mtime, ctime and inode match; else hashed
    once and remembered) or `current none`."""
    return "\n".join(
        [
            'if [ -f "$B" ]; then',
            '  if [ -f "$S" ] && [ "$(cut -d" " -f2- "$S")" = "$(stat_of "$B")" ]; then',
            '    cur=$(cut -d" " -f1 "$S")',
            '  else cur=$(sha_of "$B") || exit 1; remember_sha "$cur"',
            "  fi",
            '  echo "current $cur"',
            'else echo "current none"; fi',
        ]
    )


def held_lines() -> str:
    return "\n".join(
        [
            "held() {",
            '  now=$(date +%s); at=$(stat -c %Y -- "$L" 2>/dev/null || echo "$now")',
            '  echo "held $((now - at))"',
            '  [ -f "$L/holder" ] && sed "s/^/holder /" -- "$L/holder"',
            "  return 0",
            "}",
            'journal() { [ -f "$J" ] && sed "s/^/journal /" -- "$J"; return 0; }',
        ]
    )


def releases_lines() -> str:
    return '[ -f "$R/list" ] && sed "s/^/release /" -- "$R/list"; true'


# --- the preflight
def run_as_prefix(component: Component, ssh_user: str) -> str:
    """`sudo -u gbuser` (from config), or nothing when the ssh user already is the service user."""
    if not component.run_as or ssh_user == component.user:
        return ""
    return component.run_as.format(user=quote(component.user))


def preflight_lines(component: Component, ssh_user: str, *, upload_kib: int | None) -> str:
    """Checks that print `fail KEY WHY` (and set bad=1) for each problem; change nothing that
    matters (the log's directory and file are created, as the start would)."""
    key = f"components.{component.name}"
    lines = [
        "bad=0",
        'fail() { printf "fail %s %s\\n" "$1" "$(printf %s "$2" | tr "\\n" " " | cut -c1-300)";'
        " bad=1; }",
        f"id -u -- {quote(component.user)} >/dev/null 2>&1 || fail {key}.user "
        f"{quote(f'no user {component.user!r} on the target')}",
    ]
    prefix = run_as_prefix(component, ssh_user)
    if prefix:
        lines.append(
            f"out=$({prefix} true 2>&1 </dev/null) || fail {key}.run_as "
            f'"\\`{_dq(prefix)} true\\` failed on the target: $out"'
        )
    log = component.log_path
    log_dir = os.path.dirname(log) or "/"
    lines.append(
        f"out=$( {{ mkdir -p -- {quote(log_dir)} && : >> {quote(log)}; }} 2>&1 ) || "
        f'fail {key}.log "cannot write {_dq(log)}: $out"'
    )
    directory = quote(os.path.dirname(component.binary) or "/")
    lines.append(
        f"[ -d {directory} ] && [ -w {directory} ] || fail {key}.binary "
        f"{quote(f'the directory of {component.binary} is missing or not writable')}"
    )
    if upload_kib is not None:
        lines.append(
            f"avail=$(df -Pk -- {directory} 2>/dev/null | awk 'NR==2 {{print $4}}')\n"
            f'[ -z "$avail" ] || [ "$avail" -ge {upload_kib} ] || fail {key}.binary '
            f'"only ${{avail}} KiB free in {_dq(os.path.dirname(component.binary))}, '
            f'the artifact needs {upload_kib} KiB"'
        )
    if component.restart.mode == "systemd":
        lines.append(
            f"command -v systemctl >/dev/null 2>&1 || fail {key}.restart "
            "'no systemctl on the target'"
        )
    lines.append('echo "machine $(uname -m)"')
    return "\n".join(lines)


def _dq(text: str) -> str:
    """`text` inside a double-quoted shell string."""
    return re.sub(r'(["\\$`])', r"\\\1", text)


def begin_command(
    paths: Paths,
    *,
    holder: str,
    journal: str,
    preflight: str,
    steal: str | None = None,
) -> str:
    """One exchange: take the lock (holder written in a temp dir, then renamed into place),
    start the journal, run the preflight, and report what the target has.

    Prints `held AGE` + `holder …` + `journal …` lines when another holds the lock (or
    `lockfail WHY`); else `acquired`, any `fail KEY WHY` (then the lock is released again and
    `released` printed), `machine M`, `current SHA|none`, `release …` lines, `journal …` lines
    of an interrupted deploy found without a lock. `steal`: the token of a stale lock to take over
    (`--recover`); only a lock still holding that token is removed.
    """
    tmp = quote(paths.lock_tmp(_token_of(holder)))
    lines = [variables(paths), HELPERS, held_lines(), f"T={tmp}"]
    if steal == HOLDERLESS:
        lines.append('if [ -d "$L" ] && [ ! -s "$L/holder" ]; then rm -rf -- "$L"; fi')
    elif steal:
        lines.append(
            f'if [ -e "$L" ] && grep -q -F -e {quote(steal)} -- "$L/holder" 2>/dev/null; then'
            ' rm -rf -- "$L"; fi'
        )
    lines += [
        'if [ -e "$L" ]; then held; journal; exit 0; fi',
        'rm -rf -- "$T"',
        f'if ! err=$( {{ mkdir -- "$T" && printf "%s\\n" {quote(holder)} > "$T/holder"; }} 2>&1 );'
        ' then rm -rf -- "$T"; echo "lockfail $err" | tr "\\n" " "; echo; exit 0; fi',
        'if ! mv -T -- "$T" "$L" 2>/dev/null; then rm -rf -- "$T";'
        ' if [ -e "$L" ]; then held; journal; else echo "lockfail cannot rename $T"; fi; exit 0;'
        " fi",
        "echo acquired",
        "journal",
        f'printf "%s\\n" {quote(journal)} > "$J" || {{ rm -rf -- "$L"; echo "lockfail journal";'
        " exit 0; }",
        preflight,
        'if [ "$bad" != 0 ]; then rm -f -- "$J"; rm -rf -- "$L"; echo released; exit 0; fi',
        current_sha_lines(),
        releases_lines(),
    ]
    return "\n".join(lines)


HOLDERLESS = "-"  # `steal` for a lock without a holder record


def _token_of(holder: str) -> str:
    return str(json.loads(holder)["token"])


# --- the service: stop, swap, start
def start_lines(component: Component, ssh_user: str) -> str:
    """Start the process detached (own session, no fd left on the channel), as `user`; prints
    `launched PID`."""
    for name in component.env:
        if not _ENV_NAME.match(name):
            raise UsageError(f"components.{component.name}.env: bad variable name {name!r}")
    if component.restart.mode == "systemd":
        return f"systemctl start {quote(component.restart.unit)}"
    env = " ".join(f"{name}={quote(value)}" for name, value in component.env.items())
    words = [
        '"$detach"',
        run_as_prefix(component, ssh_user),
        f"env {env}" if env else "",
        f"sh -c {quote(_exec_form(component.start_command))}",
    ]
    launch = " ".join(word for word in words if word)
    return "\n".join(
        [
            f"( cd -- {quote(component.directory)} || exit 1",
            f"mkdir -p -- {quote(os.path.dirname(component.log_path) or '/')}",
            "detach=$(command -v setsid || echo nohup)",
            f"{launch} < /dev/null >> {quote(component.log_path)} 2>&1 &",
            'pid=$!; echo "$pid" > "$L/launcher" 2>/dev/null; echo "launched $pid" || true )',
        ]
    )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _exec_form(command: str) -> str:
    """`exec CMD` for a simple command, so the service itself is the session's process."""
    if re.search(r"[;&|\n`$()<>]", command) or command.lstrip().startswith("exec "):
        return command
    return f"exec {command}"


def stop_lines(component: Component) -> str:
    stop = f"( {stop_processes_command(component.binary, component.stop_timeout)} )"
    if component.restart.mode == "systemd":
        return f"systemctl stop {quote(component.restart.unit)} && {stop}"
    return stop


def running_lines(component: Component) -> str:
    """Sets `up=1` when the service runs (its unit is active, or a process runs B)."""
    lines = ["up=0"]
    if component.restart.mode == "systemd":
        lines.append(
            f"systemctl is-active --quiet {quote(component.restart.unit)} 2>/dev/null && up=1"
        )
    lines.append(f'( {resolve_binary(component.binary)}\n{FIND_PIDS}\n[ -n "$(pids)" ] ) && up=1')
    return "\n".join(lines)


def _stop_and_note(component: Component) -> list[str]:
    """Stop, and note whether anything ran (in `up`, and in B.lock/was-running for the undo):
    the stop's own search for the processes says it, no second search is needed."""
    lines = []
    if component.restart.mode == "systemd":
        unit = quote(component.restart.unit)
        lines.append(f"systemctl is-active --quiet {unit} 2>/dev/null && up=1")
    lines += [
        "stop_service() {\n" + stop_lines(component) + "\n}",
        'stopped=$(stop_service) || { echo "$stopped"; fail "stop"; }',
        'echo "$stopped"',
        "case $stopped in *stopped*|*killed*) up=1 ;; esac",
        'echo "was-running $up"',
        '[ "$up" = 1 ] && : > "$W"',
    ]
    return lines


def ownership_lines(component: Component) -> str:
    # `user:` gives the user's login group, which is what `chown user:user` means where they match.
    return f'chown -- {quote(component.user + ":")} "$B" && chmod 0755 -- "$B"'


def service_command(
    paths: Paths,
    component: Component,
    ssh_user: str,
    *,
    sha256: str,
    source: str | None = None,
    stop: bool = True,
    start: bool = True,
) -> str:
    """The steps that touch the running service, fused into one script with its own undo:
    keep B as B.prev (and among the releases if it is not there yet) → stop → `source` (a
    release's path; default B.new) renamed over B → chown/chmod → start detached.

    Prints `was-running 0|1`, the stop's outcome, then `launched PID`. On a failure after the stop
    it puts B.prev back, starts it if it ran, and exits 3 (prints `restored` or `restore-failed`).
    Signals are ignored: once begun it finishes, even if the deploy that sent it is killed.
    `stop=False` (strategy seed, second half): the service was stopped by an earlier script.
    """
    lines = [
        "trap '' HUP INT TERM PIPE",
        variables(paths),
        HELPERS,
        PHASE,
        'echo $$ > "$L/script" 2>/dev/null',
        '[ -f "$W" ] && up=1 || up=0',
        "restore() {",
        "  " + stop_lines(component).replace("\n", "\n  ") + " || return 1",
        '  if [ "$had" = 1 ]; then rm -f -- "$B.restore"; same_bytes "$P" "$B.restore" &&'
        ' rename_over "$B.restore" "$B" || return 1',
        '  else rm -f -- "$B"; fi',
        '  rm -f -- "$S"',
        '  if [ "$up" = 1 ]; then '
        + start_lines(component, ssh_user).replace("\n", "\n    ")
        + " || return 1; fi",
        "}",
        'fail() { echo "failed $1" >&2; phase "undoing"; if restore; then echo restored;'
        ' phase "restored"; else echo restore-failed; phase "restore-failed"; fi;'
        ' rm -f -- "$L/script"; exit 3; }',
    ]
    if stop:
        lines += [
            "had=0",
            'if [ -f "$B" ]; then had=1',
            '  cur=$(cut -d" " -f1 "$S" 2>/dev/null)',
            '  same_bytes "$B" "$P" || { echo "cannot keep $B as $P" >&2; exit 1; }',
            '  if [ -n "$cur" ] && ! grep -q "^$cur " "$R/list" 2>/dev/null; then',
            '    mkdir -p -- "$R" && same_bytes "$B" "$R/$cur" &&'
            ' echo "$cur unknown $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$R/list"',
            "  fi",
            "fi",
            'echo "$had" > "$L/had"',
            'phase "stopping"',
            *_stop_and_note(component),
            'phase "stopped"',
        ]
    else:
        lines += ['had=$(cat "$L/had" 2>/dev/null || echo 0)', 'echo "was-running $up"']
    if start:
        if source:
            lines.append(
                f'rm -f -- "$N"; same_bytes {quote(source)} "$N" || fail "copy {_dq(source)}"'
            )
        lines += [
            'rename_over "$N" "$B" || fail "swap"',
            'phase "swapped"',
            ownership_lines(component) + ' || fail "chown"',
            f'remember_sha {quote(sha256)} || fail "remember sha256"',
            start_lines(component, ssh_user) + ' || fail "start"',
            'phase "started"',
        ]
    lines.append('rm -f -- "$L/script"')
    return "\n".join(lines)


def wait_for_script_lines() -> str:
    """Wait (bounded) for a service script still running on the target (its sender was cut)."""
    return (
        'pid=$(cat "$L/script" 2>/dev/null); i=0\n'
        'while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$i" -lt 600 ]; do'
        " sleep 0.1; i=$((i + 1)); done"
    )


def restore_command(paths: Paths, component: Component, ssh_user: str) -> str:
    """Undo a service script that completed: stop what it started, put B.prev back (or remove B
    when there was none), start it again if it was running. Prints `restored`, exit 1 if not."""
    return "\n".join(
        [
            "trap '' HUP INT TERM PIPE",
            variables(paths),
            HELPERS,
            PHASE,
            wait_for_script_lines(),
            'phase "undoing"',
            '[ -f "$W" ] && up=1 || up=0',
            'had=$(cat "$L/had" 2>/dev/null || echo 1)',
            stop_lines(component) + " || exit 1",
            'if [ "$had" = 1 ]; then [ -f "$P" ] || { echo "no $P to put back" >&2; exit 1; }',
            '  rm -f -- "$B.restore"; same_bytes "$P" "$B.restore" &&'
            ' rename_over "$B.restore" "$B" || exit 1',
            'else rm -f -- "$B"; fi',
            'rm -f -- "$S"',
            'if [ "$up" = 1 ]; then ' + start_lines(component, ssh_user) + " || exit 1; fi",
            'phase "restored"',
            'echo "restored had=$had up=$up"',
        ]
    )


def remove_new_command(paths: Paths) -> str:
    return f"rm -f -- {quote(paths.new)}"


# --- the end
def finish_command(
    paths: Paths,
    *,
    token: str,
    log_entry: dict[str, object],
    started_epoch: int,
    keep_release: tuple[str, str, int] | None = None,
    drop_above: str | None = None,
    phase: str = "done",
) -> str:
    """One exchange at the end: record the phase; when the binary passed health, keep it among
    the releases (`keep_release` = (sha256, commit, how many to keep)); after a rollback to a
    release, drop the releases above it from the list (`drop_above` = its sha256: a second
    rollback goes further down, never up); append the deploy log line (its `duration` measured
    here); end the journal and release the lock if it is still ours."""
    entry = json.dumps(log_entry, sort_keys=True)
    assert entry.endswith("}")
    lines = [variables(paths), HELPERS, PHASE, f"phase {quote(phase)}"]
    if keep_release:
        sha, commit, keep = keep_release
        lines += [
            'mkdir -p -- "$R"',
            f'same_bytes "$B" "$R/{sha}"',
            f'{{ grep -v "^{sha} " "$R/list" 2>/dev/null; echo {quote(sha)} {quote(commit)}'
            ' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"; } > "$R/list.tmp"',
            f'tail -n {int(keep)} -- "$R/list.tmp" > "$R/list" && rm -f -- "$R/list.tmp"',
        ]
    if drop_above:
        lines += [
            f'awk -v s={quote(drop_above)} \'{{print}} $1 == s {{exit}}\' "$R/list" > "$R/list.tmp"'
            ' && mv -f -- "$R/list.tmp" "$R/list"',
        ]
    if keep_release or drop_above:
        lines.append(
            'for f in "$R"/*; do n=${f##*/}; case $n in list|list.tmp) continue ;; esac;'
            ' grep -q "^$n " "$R/list" || rm -f -- "$f"; done'
        )
    lines += [
        f"d=$(( $(date +%s) - {int(started_epoch)} ))",
        f'printf \'%s, "duration": %s}}\\n\' {quote(entry[:-1])} "$d" >> {quote(paths.deploy_log)}',
        # After a restore that failed, the journal stays: `status` and the next deploy say so.
        f'if grep -q -F -e {quote(token)} -- "$L/holder" 2>/dev/null; then'
        + ("" if "restore" in phase else ' rm -f -- "$J";')
        + ' rm -rf -- "$L"; echo unlocked; else echo "lock not ours"; fi',
    ]
    return "\n".join(lines)


def remove_lock_command(paths: Paths) -> str:
    return f"rm -rf -- {quote(paths.lock)}"
