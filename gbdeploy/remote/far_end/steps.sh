# shellcheck shell=sh
# gbdeploy's deploy steps, one function each: a script that `deploy/layout.py` builds is the quoted
# variable prelude, then one call line per step (every value an argument, quoted in Python). Sent
# after procs.sh and lib.sh, whose variables it uses (see lib.sh's header), and T, the lock's
# temporary directory (begin). A function that ends the script says so: it `exit`s.

# --- begin: the lock, the preflight, what the target has
# ours TOKEN: whether the lock holds TOKEN (is this deploy's).
ours() { grep -q -F -e "$1" -- "$L/holder" 2>/dev/null; }
# steal_stale TOKEN FORCE LOOKS (`--recover`): remove the stale lock whose holder has TOKEN (`-`: a
# lock without a holder record) once every service script it began has ended (`wait_for_scripts`
# LOOKS), and only when the far end of its session has ended too: a deploy still connected is
# alive (prints `live-session PID` and keeps the lock), unless FORCE is 1. A killed deploy's
# session ends within moments of its connection.
steal_stale() {
  if [ "$1" = - ]; then
    if [ ! -d "$L" ] || [ -s "$L/holder" ]; then return 0; fi
  elif [ ! -e "$L" ] || ! ours "$1"; then return 0
  fi
  wait_for_scripts "$3"
  s=$(cat "$L/session" 2>/dev/null); i=0; forced=$2
  while [ "$forced" = 0 ] && [ -n "$s" ] && connected "$s" && [ "$i" -lt 50 ]; do
    sleep 0.1; i=$((i + 1))
  done
  if [ "$forced" = 0 ] && [ -n "$s" ] && connected "$s"; then echo "live-session $s"
  else rm -rf -- "$L"; fi
}
# take_lock HOLDER JOURNAL: the holder record written in T, then T renamed into place (atomic: of
# two deploys, one holds it); prints `acquired`, the journal of an interrupted deploy found
# without a lock, and starts the journal. Else prints `held AGE` + `holder …` + `journal …`, or
# `lockfail WHY`, and ends the script.
take_lock() {
  if [ -e "$L" ]; then held; journal; exit 0; fi
  rm -rf -- "$T"
  if ! err=$( { mkdir -- "$T" && printf '%s\n' "$1" > "$T/holder"; } 2>&1 ); then
    rm -rf -- "$T"; echo "lockfail $err" | tr '\n' ' '; echo; exit 0
  fi
  if ! mv -T -- "$T" "$L" 2>/dev/null; then rm -rf -- "$T"
    if [ -e "$L" ]; then held; journal; else echo "lockfail cannot rename $T"; fi; exit 0
  fi
  echo acquired
  # the far end of this deploy's session: while it lives, the deploy is still connected
  echo "$PPID" > "$L/session" 2>/dev/null
  journal
  printf '%s\n' "$2" > "$J" || { rm -rf -- "$L"; echo "lockfail journal"; exit 0; }
  bad=0
}
# refuse KEY WHY: a failed preflight check, printed as `fail KEY WHY` (WHY on one line, cut).
refuse() { printf 'fail %s %s\n' "$1" "$(printf %s "$2" | tr '\n' ' ' | cut -c1-300)"; bad=1; }
check_user() { id -u -- "$2" >/dev/null 2>&1 || refuse "$1" "no user '$2' on the target"; }
# check_run_as KEY SHOWN WORD…: the words (`sudo -u gbuser`, shown as SHOWN) run `true`.
check_run_as() {
  key=$1 shown=$2; shift 2
  out=$("$@" true 2>&1 </dev/null) || refuse "$key" "\`$shown true\` failed on the target: $out"
}
# check_log KEY DIR LOG: the log's directory and file are created, as the start would.
check_log() {
  out=$( { mkdir -p -- "$2" && : >> "$3"; } 2>&1 ) || refuse "$1" "cannot write $3: $out"
}
check_directory() {
  if [ ! -d "$2" ] || [ ! -w "$2" ]; then
    refuse "$1" "the directory of $3 is missing or not writable"
  fi
}
# check_room KEY KIB DIR: room in DIR for KIB (the upload and the deploy's records), plus B.prev
# and the kept release when they cannot be hard links of B (copies then).
check_room() {
  need=$2
  if [ -f "$B" ] && ! { ln -- "$B" "$L/link" 2>/dev/null && rm -f -- "$L/link"; }; then
    rm -f -- "$L/link"; need=$((need + 2 * ($(stat -c %s -- "$B") / 1024 + 1)))
  fi
  avail=$(df -Pk -- "$3" 2>/dev/null | awk 'NR==2 {print $4}')
  [ -z "$avail" ] || [ "$avail" -ge "$need" ] || refuse "$1" "only ${avail} KiB free in $3, \
the deploy writes up to ${need} KiB (the artifact, kept copies, records)"
}
# check_frozen F: prints `frozen RECORD` and fails while the freeze marker F exists.
check_frozen() { if frozen_record "$1"; then bad=1; fi; }
# end_preflight: after a failed check the lock is given back (`released`) and the script ends.
end_preflight() {
  if [ "$bad" != 0 ]; then rm -f -- "$J"; rm -rf -- "$L"; echo released; exit 0; fi
}
# current_sha: prints `current SHA` (lib.sh's `remembered` while B is unchanged, else hashed once
# and remembered) or `current none`.
current_sha() {
  if [ -f "$B" ]; then
    cur=$(remembered) || { cur=$(sha_of "$B") || exit 1; remember_sha "$cur"; }
    echo "current $cur"
  else echo "current none"; fi
}
list_releases() { [ -f "$R/list" ] && sed 's/^/release /' -- "$R/list"; return 0; }

# --- the service script (layout.service_command): it ignores HUP INT TERM PIPE, and defines
# `stop_service`, the service's own stop (service.py).
# write_recipe TEXT: the recipe of the current config, as $L/recipe (what starts a binary that has
# none).
write_recipe() { ( umask 077; printf '%s\n' "$1" > "$L/recipe" ); }
# service_begin NAME TOKEN RECIPE: claim the script (lib.sh's `claim`), write the recipe, and read
# whether an earlier script of this deploy found the service running (`up`).
service_begin() {
  claim "$1" "$2"
  write_recipe "$3"
  if [ -f "$W" ]; then up=1; else up=0; fi
}
# failed WHY: a step after the stop failed: put B.prev back and start it as it ran (lib.sh's
# `restore`), print `restored` or `restore-failed`, and end the script (exit 3).
failed() {
  echo "failed $1" >&2
  phase "undoing"; if restore; then echo restored; phase "restored"; else echo restore-failed
    phase "restore-failed"; fi
  exit 3
}
# keep_previous: keep B as B.prev with its recipe (and among the releases when it is not there
# yet), note whether there was a B (`had`, and $L/had for the undo), journal `stopping`.
keep_previous() {
  had=0
  if [ -f "$B" ]; then had=1
    cur=$(cut -d" " -f1 "$S" 2>/dev/null)
    same_bytes "$B" "$P" || { echo "cannot keep $B as $P" >&2; exit 1; }
    if [ -f "$G" ]; then cp -p -- "$G" "$P.start" || { echo "cannot keep $G as $P.start" >&2; exit 1; }
    else rm -f -- "$P.start"; fi
    if [ -n "$cur" ] && ! grep -q "^$cur " "$R/list" 2>/dev/null; then
      mkdir -p -- "$R" && same_bytes "$B" "$R/$cur" &&
        { [ ! -f "$G" ] || cp -p -- "$G" "$R/$cur.start"; } &&
        echo "$cur unknown $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$R/list"
    fi
  fi
  printf '%s\n' "$had" > "$L/had" || { echo "cannot write $L/had" >&2; exit 1; }
  phase "stopping" || { echo "cannot write the journal $J" >&2; exit 1; }
}
# stop_noting: stop (`stop_service`) and note whether anything ran (`up`, and $W for the undo):
# the stop's own search for the processes says it. Prints its outcome and `was-running 0|1`.
stop_noting() {
  stopped=$(stop_service) || { echo "$stopped"; failed "stop"; }
  echo "$stopped"
  case $stopped in *stopped*|*killed*) up=1 ;; esac
  echo "was-running $up"
  if [ "$up" = 1 ]; then : > "$W"; fi
  phase "stopped" || failed "journal"
}
# stopped_before: the second script of strategy seed: an earlier one stopped the service.
stopped_before() { had=$(cat "$L/had" 2>/dev/null); echo "was-running $up"; }
# stage SOURCE: a kept release SOURCE copied as B.new with its recipe (or, without one, the current
# config's) as B.start.new; with SOURCE "", the upload is B.new already and the recipe the config's.
stage() {
  if [ -n "$1" ]; then
    rm -f -- "$N"; same_bytes "$1" "$N" || failed "copy $1"
    if [ -f "$1.start" ]; then cp -p -- "$1.start" "$G.new"; else cp -p -- "$L/recipe" "$G.new"
    fi || failed "recipe"
  else
    cp -p -- "$L/recipe" "$G.new" || failed "recipe"
  fi
}
# swap_in SHA OWNER: rename B.new over B (journal `swapped`), chown OWNER (`user:`) and chmod 0755,
# remember its sha256, put its recipe in place, launch it (journal `started`).
swap_in() {
  rename_over "$N" "$B" || failed "swap"
  phase "swapped" || failed "journal"
  { chown -- "$2" "$B" && chmod 0755 -- "$B"; } || failed "chown"
  remember_sha "$1" || failed "remember sha256"
  mv -f -- "$G.new" "$G" || failed "recipe"
  launch "$G" || failed "start"
  phase "started" || failed "journal"
}

# --- the undo of the service scripts (layout.restore_command), after `claim_or_wait` of each
# undo_service TOKEN RECIPE: only while the lock holds TOKEN (else `not-ours`) and the journal shows
# the service was touched (`stopping`; else `untouched`) and not yet kept (`healthy`, `done`:
# `kept`): stop what runs, put B.prev back, start it as it was started if it ran. Prints
# `restored had=… up=…`, or `restore-failed` (exit 1).
undo_service() {
  ours "$1" || { echo not-ours; exit 0; }
  if [ -f "$W" ]; then up=1; else up=0; fi
  grep -q '"phase": "stopping"' -- "$J" 2>/dev/null || { echo untouched; exit 0; }
  last=$(tail -n 1 -- "$J" | sed -n 's/.*"phase": "\([a-z-]*\)".*/\1/p')
  case $last in
    healthy|done) echo kept; exit 0 ;;
    restored) echo "restored up=$up"; exit 0 ;;
    restore-failed) echo restore-failed; exit 1 ;;
  esac
  write_recipe "$2"
  had=$(cat "$L/had" 2>/dev/null)
  phase "undoing"
  if ! restore; then phase "restore-failed"; echo restore-failed; exit 1; fi
  phase "restored"
  echo "restored had=$had up=$up"
}

# --- the end (layout.finish_command), once begun it finishes (the script ignores signals)
# finish_phase TOKEN PHASE: only while the lock is this deploy's (else prints `lock not ours` and
# ends the script), journal PHASE.
finish_phase() { ours "$1" || { echo "lock not ours"; exit 0; }; phase "$2"; }
# keep_release SHA COMMIT KEEP: keep B among the releases with its recipe (COMMIT `unknown`: the
# one the list knows for SHA), the last KEEP in the list, the files of the others removed. Prints
# `kept` or `keep-failed WHY`.
keep_release() {
  c=$2
  if [ "$c" = unknown ]; then
    c=$(awk -v s="$1" '$1 == s {c = $2} END {print c}' "$R/list" 2>/dev/null)
    [ -n "$c" ] || c=unknown
  fi
  if err=$( { mkdir -p -- "$R" && same_bytes "$B" "$R/$1" &&
      { [ ! -f "$G" ] || cp -p -- "$G" "$R/$1.start"; } &&
      { grep -v "^$1 " "$R/list" 2>/dev/null; echo "$1" "$c" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"; } \
        > "$R/list.tmp" &&
      tail -n "$3" -- "$R/list.tmp" > "$R/list.new" && mv -f -- "$R/list.new" "$R/list"; } 2>&1 )
  then echo kept
  else echo "keep-failed $err" | tr '\n' ' '; echo; fi
  rm -f -- "$R/list.tmp" "$R/list.new"
  # The list's sha256s read once, not an awk per kept file: the finish is on the deploy's path.
  listed=" $(while read -r k _ || [ -n "$k" ]; do printf '%s ' "$k"; done 2>/dev/null < "$R/list")"
  for f in "$R"/*; do
    n=${f##*/}; n=${n%.start}
    case $n in list|list.*) continue ;; esac
    case $listed in *" $n "*) ;; *) rm -f -- "$f" ;; esac
  done
}
# log_deploy ENTRY STARTED LOG: append ENTRY (a JSON object without its closing brace) with its
# `duration` in seconds since the epoch STARTED to the deploy log LOG.
log_deploy() { d=$(( $(date +%s) - $2 )); printf '%s, "duration": %s}\n' "$1" "$d" >> "$3"; }
end_journal() { rm -f -- "$J"; }
unlock() { rm -rf -- "$L"; echo unlocked; }

# --- read-only
# inspect_target: the lock (`held …`), the journal, the kept releases, and B's sha256 (`current
# SHA|none`: remembered while B is unchanged, else hashed, never written).
inspect_target() {
  if [ -e "$L" ]; then held; fi
  journal
  list_releases
  if cur=$(remembered); then echo "current $cur"
  elif [ -f "$B" ]; then echo "current $(sha_of "$B")"; else echo "current none"; fi
}

# --- the freeze (freeze.py): a marker F beside B, written and removed under the deploy lock
# frozen_record F: prints `frozen RECORD` when the marker F exists (and succeeds).
frozen_record() { [ -e "$1" ] && printf 'frozen %s\n' "$(head -n 1 -- "$1")"; }
# freeze_take F HOLDER RECORD: take the deploy lock (built in T, renamed into place, as
# `take_lock`), write the marker F with RECORD, give the lock back. Prints `frozen RECORD` (it
# was already), `held …` (a deploy runs), `lockfail WHY`, or `acquired`.
freeze_take() {
  frozen_record "$1" && exit 0
  if [ -e "$L" ]; then held; exit 0; fi
  if ! err=$( { mkdir -- "$T" && printf '%s\n' "$2" > "$T/holder"; } 2>&1 ); then
    rm -rf -- "$T"; echo "lockfail $err" | tr '\n' ' '; echo; exit 0
  fi
  if ! mv -T -- "$T" "$L" 2>/dev/null; then rm -rf -- "$T"; held; exit 0; fi
  if ! err=$( { printf '%s\n' "$3" > "$1.tmp" && mv -f -- "$1.tmp" "$1"; } 2>&1 ); then
    echo "lockfail $err" | tr '\n' ' '; echo
  fi
  rm -rf -- "$L"
  if [ -e "$1" ]; then echo acquired; fi
}
# freeze_lift F: remove the marker; prints `released RECORD`, or `none` when there was no freeze.
freeze_lift() {
  if [ -e "$1" ]; then r=$(head -n 1 -- "$1"); rm -f -- "$1" && printf 'released %s\n' "$r"
  else echo none; fi
}
# freeze_status F: `frozen RECORD` when frozen, `held AGE` + `holder …` while a deploy holds the
# deploy lock.
freeze_status() { frozen_record "$1"; if [ -e "$L" ]; then held; fi; return 0; }

# --- the service alone (service_control.py: start, stop, restart under the deploy lock)
# note_running BINARY: `up=1` while a process runs BINARY (else `up=0`).
note_running() { up=0; if ( resolve "$1"; [ -n "$(pids)" ] ); then up=1; fi; }
# start_unless_running: with `up=1` prints `already-running` and ends the script.
start_unless_running() { if [ "$up" = 1 ]; then echo already-running; exit 0; fi; }
# control_stop: journal `stopping`, stop (`stop_service`) and print its outcome, journal
# `stopped`; a failed stop ends the script (exit 3).
control_stop() {
  phase "stopping"
  stopped=$(stop_service) || { echo "$stopped"; echo "failed stop" >&2; exit 3; }
  echo "$stopped"
  phase "stopped"
}
# control_start RECIPE: launch the recipe of the current config (a failure ends the script, exit
# 3), keep it as B's, journal `started`.
control_start() {
  write_recipe "$1"
  launch "$L/recipe" || { echo "failed start" >&2; exit 3; }
  cp -p -- "$L/recipe" "$G"
  phase "started"
}

# --- strategy switch (deploy/switch.py): the new binary beside the old process, each stopped by pid
# note TOKEN RECORD: RECORD (a JSON object without its closing brace) and its time appended to the
# journal, while the lock holds TOKEN.
note() { ours "$1" || return 0; printf '%s, "time": "%s"}\n' "$2" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$J"; }
# switch_beside IDLE BUSY PLACING RECIPE SOURCE OWNER SHA (after `claim beside`): SOURCE placed
# at B with nothing stopped (switch_place) and started with RECIPE on the idle port. Prints `before
# PIDS` (what ran B: journalled with PLACING, the `placing` record without its closing brace),
# then `launched PID`. Ends the script: BUSY (nothing changed) when something listens on IDLE, 3
# when placing or starting failed.
switch_beside() {
  resolve "$B"
  listening_inodes "$1"
  [ -z "$inodes" ] || { echo "port $1 is in use" >&2; exit "$2"; }
  before=$(pids | tr '\n' ' ')
  echo "before $before"
  printf '%s, "old_pids": "%s", "time": "%s"}\n' "$3" "$before" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$J" || exit 1
  write_recipe "$4"
  switch_place "$5" "$6" || { echo "cannot put the new binary in place" >&2; exit 3; }
  remember_sha "$7" || exit 3
  cp -p -- "$L/recipe" "$G" || exit 3
  launch "$G" || { echo "the start failed" >&2; exit 3; }
  printf '{"phase": "started", "launcher": "%s", "time": "%s"}\n' \
    "$(cat "$L/launcher" 2>/dev/null)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$J"
}
# switch_undo TOKEN LOOKS (after `claim_or_wait beside`): the beside step's undo, decided on the
# journal: nothing when the lock does not hold TOKEN (`not-ours`), the switch was confirmed
# (`kept`) or nothing was placed (`untouched`); else stop_all_but LOOKS the processes that ran
# before, and switch_unplace (`restored`, or `restore-failed`, exit 1).
switch_undo() {
  ours "$1" || { echo not-ours; exit 0; }
  grep -q '"phase": "switched"' -- "$J" 2>/dev/null && { echo kept; exit 0; }
  grep -q '"phase": "placing"' -- "$J" 2>/dev/null || { echo untouched; exit 0; }
  resolve "$B"
  before=$(sed -n 's/.*"old_pids": "\([0-9 ]*\)".*/\1/p' -- "$J" | head -n 1)
  phase "undoing"
  # shellcheck disable=SC2086  # the pids, one word each
  if ! { stop_all_but "$2" $before && switch_unplace; }; then
    phase "restore-failed"; echo restore-failed; exit 1
  fi
  phase "restored"
  echo restored
}
# stop_old LOOKS PID…: stop_pid each PID (the processes that ran B before the switch), then the
# phase `old-stopped`; returns 1 unless each one stopped.
stop_old() {
  resolve "$B"
  looks=$1; shift; rc=0
  for p in "$@"; do stop_pid "$p" "$looks" || rc=1; done
  phase "old-stopped"
  return "$rc"
}
# keep_serving PORT OTHER LOOKS DRAIN_LOOKS QUIET SLEEP RECIPE (`--recover`): the process running
# B that serves PORT kept (`keep PID`; `serving none` and exit 3 when none does), OTHER drained
# (drain DRAIN_LOOKS QUIET SLEEP), every other process running B stopped by pid, B made the kept
# process's binary (keep_binary_of), RECIPE its recipe.
keep_serving() {
  keep=$(serving_pids "$B" "$1" | head -n 1)
  resolve "$B"
  [ -n "$keep" ] || { echo "serving none"; exit 3; }
  echo "keep $keep"
  drain "$2" "$4" "$5" "$6"
  stop_all_but "$3" "$keep" || exit 1
  keep_binary_of "$keep" || exit 1
  write_recipe "$7"
  cp -p -- "$L/recipe" "$G"
  phase "recovered"
}
