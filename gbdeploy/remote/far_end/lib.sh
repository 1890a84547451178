# shellcheck shell=sh
# gbdeploy's far-end library: the shell functions every script of a deploy (layout.py) calls,
# after procs.sh.
# Sent ahead of each script, after the quoted variable prelude (`layout.variables`):
#   B the binary, N B.new, P B.prev, L B.lock, J B.journal, S B.sha256, R B.releases,
#   W B.lock/was-running, G B.start (its recipe); `b` (set by `resolve`) B as /proc/PID/exe shows it.
# POSIX sh (dash, busybox ash); `[ A -ef B ]` is in every shell a target has (dash, bash, busybox).
# shellcheck disable=SC3013

# --- files
sha_of() {
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
# remembered: the sha256 of B kept in S (`SHA SIZE MTIME INODE`), printed only while B's size,
# mtime and inode still match what was kept (else fails: B was replaced since).
remembered() {
  [ -f "$B" ] && [ -f "$S" ] && [ "$(cut -d" " -f2- "$S")" = "$(stat_of "$B")" ] && cut -d" " -f1 "$S"
}
same_bytes() { [ "$1" -ef "$2" ] || ln -f -- "$1" "$2" 2>/dev/null || cp -p -- "$1" "$2"; }
rename_over() { if [ "$1" -ef "$2" ]; then rm -f -- "$1"; else mv -f -- "$1" "$2"; fi; }

# --- the lock and the journal
phase() { printf '{"phase": "%s", "time": "%s"}\n' "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$J"; }
held() {
  now=$(date +%s); at=$(stat -c %Y -- "$L" 2>/dev/null || echo "$now")
  echo "held $((now - at))"
  [ -f "$L/holder" ] && sed "s/^/holder /" -- "$L/holder"
  return 0
}
journal() { [ -f "$J" ] && sed "s/^/journal /" -- "$J"; return 0; }

# --- the service
# launch RECIPE: source the sh recipe (service.py) in a subshell whose signals are back to their
# defaults (the calling script ignores HUP INT TERM PIPE, and ignored signals are inherited across
# exec); remember the launcher's pid (`launched PID`) for `state`.
launch() {
  rm -f -- "$L/launcher"
  # shellcheck disable=SC1090  # the recipe is data of the target
  out=$( ( trap - HUP INT QUIT TERM PIPE; . "$1" ) ) || { echo "$out"; return 1; }
  [ -z "$out" ] || echo "$out"
  case $out in *"launched "*) printf '%s\n' "${out##*launched }" > "$L/launcher" ;; esac
  return 0
}
# restore: stop what runs (the caller's `stop_service`), put B.prev back with its recipe (remove B
# when there was none before, `had=0`; leave B as it is when that is not known), start it again
# if it ran (`up=1`). The calling script sets `had` and `up`.
# shellcheck disable=SC2154
restore() {
  stop_service >/dev/null || return 1
  case $had in
  1) [ -f "$P" ] || { echo "no $P to put back" >&2; return 1; }
     rm -f -- "$B.restore"; same_bytes "$P" "$B.restore" && rename_over "$B.restore" "$B" || return 1
     if [ -f "$P.start" ]; then cp -p -- "$P.start" "$G"; else rm -f -- "$G"; fi ;;
  0) rm -f -- "$B" "$G" ;;
  *) echo "no record whether a binary was there before: $B left as it is" >&2 ;;
  esac
  rm -f -- "$S"
  if [ "$up" = 1 ]; then
    if [ -f "$G" ]; then launch "$G"; else launch "$L/recipe" && cp -p -- "$L/recipe" "$G"; fi || return 1
  fi
}
# parent: q becomes the parent pid of process q ("" once it is gone). /proc/PID/stat is
# `PID (COMM) STATE PPID …`; COMM may hold spaces and parentheses, the fields after it never do.
parent() { _stat=; read -r _stat 2>/dev/null < "/proc/$q/stat"; _stat=${_stat##*) }; q=${_stat#* }; q=${q%% *}; }
# state: prints `up PID:USER…` (the processes running "$b" that descend from what this deploy
# launched, or any when it launched nothing: a systemd unit, an unchanged binary), `starting` (its
# launcher still runs), or `down`. Every health check runs it: files are read with `read`, not by
# forking cat or sed.
state() {
  launcher=; read -r launcher 2>/dev/null < "$L/launcher"; mine=
  for p in $(pids); do
    q=$p; n=0
    while [ -n "$launcher" ] && [ -n "$q" ] && [ "$q" != "$launcher" ] && [ "$q" -gt 1 ] && [ "$n" -lt 30 ]; do
      parent
      n=$((n + 1))
    done
    if [ -z "$launcher" ] || [ "$q" = "$launcher" ]; then
      mine="$mine $p:$(stat -c %U "/proc/$p" 2>/dev/null)"
    fi
  done
  if [ -n "$mine" ]; then echo "up$mine"
  elif [ -n "$launcher" ] && kill -0 "$launcher" 2>/dev/null; then echo starting
  else echo down; fi
}

# --- the service scripts' claims (steps.sh's service_begin claims; undo_service's caller claim_or_wait)
# claim NAME TOKEN: the service script NAME begins only while the lock holds TOKEN and its undo
# has not claimed it first (then it exits 4 having changed nothing); `run.NAME/done` marks its end.
claim() {
  grep -q -F -e "$2" -- "$L/holder" 2>/dev/null || { echo "the lock is no longer this deploy's" >&2; exit 4; }
  mkdir -- "$L/run.$1" 2>/dev/null || { echo "claimed by the undo" >&2; exit 4; }
  echo $$ > "$L/run.$1/pid"
  claimed="$L/run.$1"
  trap ': > "$claimed/done"' EXIT
}
# claim_or_wait NAME LOOKS: for the undo, claim the service script NAME (it will never run), or
# wait up to LOOKS tenths of a second for it to end if it began.
claim_or_wait() {
  if mkdir -- "$L/run.$1" 2>/dev/null; then : > "$L/run.$1/done"; return 0; fi
  i=0
  while [ -d "$L/run.$1" ] && [ ! -f "$L/run.$1/done" ] && [ "$i" -lt "$2" ]; do
    p=$(cat "$L/run.$1/pid" 2>/dev/null)
    [ -n "$p" ] && ! kill -0 "$p" 2>/dev/null && break
    sleep 0.1; i=$((i + 1))
  done
}
# wait_for_scripts LOOKS: for `--recover`, wait up to LOOKS tenths of a second for each service
# script the stale lock's deploy began (a deploy killed here leaves its script running on the
# target: it ignores signals); prints `orphan PID` for each one waited for.
wait_for_scripts() {
  for d in "$L"/run.*; do
    [ -d "$d" ] || continue; i=0
    while [ ! -f "$d/done" ] && [ "$i" -lt "$1" ]; do
      p=$(cat "$d/pid" 2>/dev/null)
      if [ -z "$p" ] || ! kill -0 "$p" 2>/dev/null; then break; fi
      [ "$i" = 0 ] && echo "orphan $p"
      sleep 0.1; i=$((i + 1))
    done
  done
}
# connected PID: whether PID is the far end of a deploy's session (helper or shell) and runs.
connected() {
  kill -0 "$1" 2>/dev/null || return 1
  tr '\000' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q gbdeploy-session && return 0
  case $(readlink "/proc/$1/exe" 2>/dev/null) in
  */sh|*/dash|*/bash|*/ash|*/busybox) return 0 ;; esac
  return 1
}
