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

Every function here returns text; nothing connects. Every value goes through `quote`.
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


def prelude(paths: Paths) -> str:
    """What every script begins with: the quoted variables, then the far end's functions
    (`remote/far_end/procs.sh`, `lib.sh`). `-v` shows it once (`Reporter.shared`)."""
    return f"{variables(paths)}\n{far_end.library()}"


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


def releases_lines() -> str:
    return '[ -f "$R/list" ] && sed "s/^/release /" -- "$R/list"; true'


# --- the preflight
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
        f"if [ ! -d {directory} ] || [ ! -w {directory} ]; then fail {key}.binary "
        f"{quote(f'the directory of {component.binary} is missing or not writable')}; fi"
    )
    if upload_kib is not None:
        # B.new, plus B.prev and the kept release when they cannot be hard links of B (copies
        # then), plus room for the journal, the recipes, the release list and the deploy log.
        lines.append(
            f"need={int(upload_kib) + WORKING_KIB}\n"
            'if [ -f "$B" ] && ! { ln -- "$B" "$L/link" 2>/dev/null && rm -f -- "$L/link"; }\n'
            "then\n"
            '  rm -f -- "$L/link"; need=$((need + 2 * ($(stat -c %s -- "$B") / 1024 + 1)))\nfi\n'
            f"avail=$(df -Pk -- {directory} 2>/dev/null | awk 'NR==2 {{print $4}}')\n"
            f'[ -z "$avail" ] || [ "$avail" -ge "$need" ] || fail {key}.binary '
            f'"only ${{avail}} KiB free in {_dq(os.path.dirname(component.binary))}, '
            f'the deploy writes up to ${{need}} KiB (the artifact, kept copies, records)"'
        )
    lines += service_of(component).preflight_lines(key)
    lines.append('echo "machine $(uname -m)"')
    return "\n".join(lines)


WORKING_KIB = 64  # what a deploy writes besides binaries: journal, recipes, lists, logs


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
    tmp = quote(paths.lock_tmp(_token_of(holder)))
    lines = [prelude(paths), f"T={tmp}"]
    if steal:
        lines.append(steal_lines(steal, force=force))
    lines += [
        'if [ -e "$L" ]; then held; journal; exit 0; fi',
        'rm -rf -- "$T"',
        f'if ! err=$( {{ mkdir -- "$T" && printf "%s\\n" {quote(holder)} > "$T/holder"; }} 2>&1 );'
        ' then rm -rf -- "$T"; echo "lockfail $err" | tr "\\n" " "; echo; exit 0; fi',
        'if ! mv -T -- "$T" "$L" 2>/dev/null; then rm -rf -- "$T";'
        ' if [ -e "$L" ]; then held; journal; else echo "lockfail cannot rename $T"; fi; exit 0;'
        " fi",
        "echo acquired",
        # the far end of this deploy's session: while it lives, the deploy is still connected
        'echo "$PPID" > "$L/session" 2>/dev/null',
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
ORPHAN_WAIT = 180  # seconds --recover waits for a service script a killed deploy left running


def steal_lines(steal: str, *, force: bool = False) -> str:
    """Remove the stale lock whose holder has token `steal` (HOLDERLESS: one without a holder),
    once every service script it began has ended (a deploy killed here leaves its script running
    on the target: it ignores signals, and it must not swap or start anything after this), and
    only when the far end of its session has ended too: a deploy still connected to the target,
    from whatever machine, is alive (prints `live-session PID` and keeps the lock; `force` takes
    it anyway). A killed deploy's session ends within moments of its connection."""
    if steal == HOLDERLESS:
        stale = '[ -d "$L" ] && [ ! -s "$L/holder" ]'
    else:
        stale = f'[ -e "$L" ] && grep -q -F -e {quote(steal)} -- "$L/holder" 2>/dev/null'
    looks = ORPHAN_WAIT * 10
    return "\n".join(
        [
            f"if {stale}; then",
            f"  wait_for_scripts {looks}",
            f'  s=$(cat "$L/session" 2>/dev/null); i=0; forced={int(force)}',
            '  while [ "$forced" = 0 ] && [ -n "$s" ] && connected "$s" && [ "$i" -lt 50 ]; do',
            "    sleep 0.1; i=$((i + 1))",
            "  done",
            '  if [ "$forced" = 0 ] && [ -n "$s" ] && connected "$s"; then echo "live-session $s"',
            '  else rm -rf -- "$L"; fi',
            "fi",
        ]
    )


def steal_command(paths: Paths, steal: str, *, force: bool = False) -> str:
    return f"{prelude(paths)}\n{steal_lines(steal, force=force)}"


def _token_of(holder: str) -> str:
    return str(json.loads(holder)["token"])


# --- the service: stop, swap, start
# How the service itself stops, starts and is seen running is `service.py`'s; the scripts below
# place those fragments among the swap, the journal and the undo.
def write_recipe_lines(component: Component, ssh_user: str) -> str:
    """The recipe of the current config, as `$L/recipe`: what starts a binary that has none."""
    text = service_of(component).recipe(ssh_user)
    return f"( umask 077; printf '%s\\n' {quote(text)} > \"$L/recipe\" )"


def claim_lines(name: str, token: str) -> str:
    """The service script `name` begins only while the lock is this deploy's and its undo has not
    claimed it first (lib.sh's `claim`)."""
    return f"claim {quote(name)} {quote(token)}"


def stop_function(component: Component) -> str:
    """`stop_service`, which lib.sh's `restore` calls: the service's own stop (service.py)."""
    return "stop_service() {\n" + service_of(component).stop_lines() + "\n}"


HEALTH_MARK = "__gbdeploy_health__"


def state_command(paths: Paths, component: Component, health: str | None = None) -> str:
    """Prints `up PID:USER…` (the processes running B that descend from what this deploy
    launched, or any when it launched nothing: a systemd unit, an unchanged binary), `starting`
    (its launcher still runs), or `down`. With `health` (a probe's command), in the same exchange:
    a HEALTH_MARK line, that command's output, and `HEALTH_MARK STATUS`."""
    return "\n".join(
        [
            prelude(paths),
            f"resolve {quote(component.binary)}",
            "state",
            *(
                [f"echo {HEALTH_MARK}", f"( {health}\n)", f'echo "{HEALTH_MARK} $?"']
                if health
                else []
            ),
        ]
    )


def _stop_and_note(component: Component) -> list[str]:
    """Stop, and note whether anything ran (in `up`, and in B.lock/was-running for the undo):
    the stop's own search for the processes says it, no second search is needed."""
    lines = service_of(component).running_before_stop_lines()
    lines += [
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
    it is killed; it begins only once (see `claim_lines`). `stop=False` (strategy seed, second
    half): the service was stopped by an earlier script."""
    lines = [
        "trap '' HUP INT TERM PIPE",
        prelude(paths),
        claim_lines(name, token),
        write_recipe_lines(component, ssh_user),
        '[ -f "$W" ] && up=1 || up=0',
        stop_function(component),
        'fail() { echo "failed $1" >&2; phase "undoing"; if restore; then echo restored;'
        ' phase "restored"; else echo restore-failed; phase "restore-failed"; fi; exit 3; }',
    ]
    if stop:
        lines += [
            "had=0",
            'if [ -f "$B" ]; then had=1',
            '  cur=$(cut -d" " -f1 "$S" 2>/dev/null)',
            '  same_bytes "$B" "$P" || { echo "cannot keep $B as $P" >&2; exit 1; }',
            '  if [ -f "$G" ]; then cp -p -- "$G" "$P.start" ||'
            ' { echo "cannot keep $G as $P.start" >&2; exit 1; }; else rm -f -- "$P.start"; fi',
            '  if [ -n "$cur" ] && ! grep -q "^$cur " "$R/list" 2>/dev/null; then',
            '    mkdir -p -- "$R" && same_bytes "$B" "$R/$cur" &&'
            ' { [ ! -f "$G" ] || cp -p -- "$G" "$R/$cur.start"; } &&'
            ' echo "$cur unknown $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$R/list"',
            "  fi",
            "fi",
            'printf "%s\\n" "$had" > "$L/had" || { echo "cannot write $L/had" >&2; exit 1; }',
            'phase "stopping" || { echo "cannot write the journal $J" >&2; exit 1; }',
            *_stop_and_note(component),
            'phase "stopped" || fail "journal"',
        ]
    else:
        lines += ['had=$(cat "$L/had" 2>/dev/null)', 'echo "was-running $up"']
    if start:
        recipe = 'cp -p -- "$L/recipe" "$G.new"'
        if source:
            lines.append(
                f'rm -f -- "$N"; same_bytes {quote(source)} "$N" || fail "copy {_dq(source)}"'
            )
            kept = quote(source + ".start")
            recipe = f'if [ -f {kept} ]; then cp -p -- {kept} "$G.new"; else {recipe}; fi'
        lines += [
            f'{recipe} || fail "recipe"',
            'rename_over "$N" "$B" || fail "swap"',
            'phase "swapped" || fail "journal"',
            "{ " + ownership_lines(component) + '; } || fail "chown"',
            f'remember_sha {quote(sha256)} || fail "remember sha256"',
            'mv -f -- "$G.new" "$G" || fail "recipe"',
            'launch "$G" || fail "start"',
            'phase "started" || fail "journal"',
        ]
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
    lines = [
        "trap '' HUP INT TERM PIPE",
        prelude(paths),
    ]
    lines += [f"claim_or_wait {quote(name)} {looks}" for name in names]
    lines += [
        f'grep -q -F -e {quote(token)} -- "$L/holder" 2>/dev/null || {{ echo not-ours; exit 0; }}',
        '[ -f "$W" ] && up=1 || up=0',
        'grep -q \'"phase": "stopping"\' -- "$J" 2>/dev/null || { echo untouched; exit 0; }',
        'last=$(tail -n 1 -- "$J" | sed -n \'s/.*"phase": "\\([a-z-]*\\)".*/\\1/p\')',
        "case $last in",
        "  healthy|done) echo kept; exit 0 ;;",
        '  restored) echo "restored up=$up"; exit 0 ;;',
        "  restore-failed) echo restore-failed; exit 1 ;;",
        "esac",
        write_recipe_lines(component, ssh_user),
        'had=$(cat "$L/had" 2>/dev/null)',
        stop_function(component),
        'phase "undoing"',
        'if ! restore; then phase "restore-failed"; echo restore-failed; exit 1; fi',
        'phase "restored"',
        'echo "restored had=$had up=$up"',
    ]
    return "\n".join(lines)


def healthy_command(paths: Paths, token: str) -> str:
    """Journal `healthy` (the new binary passed health and settled): from here an undo keeps it."""
    return "\n".join(
        [
            prelude(paths),
            f'grep -q -F -e {quote(token)} -- "$L/holder" && phase healthy',
        ]
    )


def remove_new_command(paths: Paths) -> str:
    return f"rm -f -- {quote(paths.new)}"


# --- the end
_FIELD = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,99}$")  # a commit in B.releases/list
SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
        f'grep -q -F -e {quote(token)} -- "$L/holder" 2>/dev/null ||'
        ' { echo "lock not ours"; exit 0; }',
        f"phase '{_phase(phase)}'",
    ]
    if keep_release:
        sha, commit, keep = keep_release
        if not SHA256.match(sha) or not _FIELD.match(commit):
            raise ValueError(f"not a release: {sha!r} {commit!r}")
        lines += [
            f"c={quote(commit)}",
            'if [ "$c" = unknown ]; then',
            f"  c=$(awk -v s={sha} '$1 == s {{c = $2}} END {{print c}}' \"$R/list\" 2>/dev/null)",
            '  [ -n "$c" ] || c=unknown',
            "fi",
            f'if err=$( {{ mkdir -p -- "$R" && same_bytes "$B" "$R/{sha}" &&'
            f' {{ [ ! -f "$G" ] || cp -p -- "$G" "$R/{sha}.start"; }} &&'
            f' {{ grep -v "^{sha} " "$R/list" 2>/dev/null; echo {sha} "$c"'
            ' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"; } > "$R/list.tmp" &&'
            f' tail -n {int(keep)} -- "$R/list.tmp" > "$R/list.new" &&'
            ' mv -f -- "$R/list.new" "$R/list"; } 2>&1 ); then echo kept',
            'else echo "keep-failed $err" | tr "\\n" " "; echo; fi',
            'rm -f -- "$R/list.tmp" "$R/list.new"',
            # The list's sha256s read once, not an awk per kept file: the finish runs after the
            # settle window, on the deploy's path.
            'listed=" $(while read -r k _ || [ -n "$k" ]; do printf \'%s \' "$k"; done 2>/dev/null'
            ' < "$R/list")"',
            'for f in "$R"/*; do n=${f##*/}; n=${n%.start}; case $n in list|list.*) continue ;;'
            ' esac; case $listed in *" $n "*) ;; *) rm -f -- "$f" ;; esac; done',
        ]
    lines += [
        f"d=$(( $(date +%s) - {int(started_epoch)} ))",
        f'printf \'%s, "duration": %s}}\\n\' {quote(entry[:-1])} "$d" >> {quote(paths.deploy_log)}',
        # After a restore that failed, the journal stays: `status` and the next deploy say so.
        ("" if "restore" in phase else 'rm -f -- "$J"; ') + 'rm -rf -- "$L"; echo unlocked',
    ]
    return "\n".join(lines)


def _phase(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z-]*", name):
        raise ValueError(f"not a phase: {name!r}")
    return name


def remove_lock_command(paths: Paths) -> str:
    return f"rm -rf -- {quote(paths.lock)}"
