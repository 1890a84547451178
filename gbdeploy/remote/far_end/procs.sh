# shellcheck shell=sh
# gbdeploy's far-end functions for processes, found by their executable (/proc/PID/exe), never by
# pattern: the ssh shell that carries a command (whose command line holds the same path) is never
# mistaken for the service. Sent ahead of the probes' and the deploy's scripts (before lib.sh).

# resolve PATH: `b`, the path as the kernel shows it in /proc/PID/exe (symlinks resolved).
resolve() { b=$(readlink -f -- "$1" 2>/dev/null) || b=$1; [ -n "$b" ] || b=$1; }
# pids: the PID of each process whose executable is exactly "$b" (or "$b (deleted)", once the
# file was replaced). GNU find compares every /proc/PID/exe target in one process (a readlink per
# process costs ~1 ms each) with -lname, whose pattern is "$b" with every glob character escaped:
# an exact match, and only the /proc/PID directory is printed, so an executable path holding a
# newline cannot forge a line. The links are named to find (the shell's glob), not searched for:
# reading every /proc/PID directory to find its `exe` took 3x as long (110 ms for 200 processes
# on a busy machine), and every health check runs this. Where find has no -printf (busybox), the
# loop compares each readlink exactly (the `x` keeps a trailing newline of the path from being
# stripped).
pids() {
  if [ "$(find /proc -maxdepth 0 -printf ok 2>/dev/null)" = ok ]; then
    pat=$(printf '%s\n' "$b" | sed 's/[][\\*?]/\\&/g')
    find /proc/[0-9]*/exe -maxdepth 0 \( -lname "$pat" -o -lname "$pat (deleted)" \) \
      -printf '%h\n' 2>/dev/null | while IFS= read -r p; do
      p=${p#/proc/}
      case $p in ''|*[!0-9]*) continue ;; esac
      [ "$p" = "$$" ] || printf '%s\n' "$p"
    done
    return 0
  fi
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    runs "${p#/proc/}" && printf '%s\n' "${p#/proc/}"
  done
  return 0
}
runs() {
  e=$(readlink "/proc/$1/exe" 2>/dev/null && echo x) || return 1
  e=${e%?x}
  case $e in "$b"|"$b (deleted)") return 0 ;; esac
  return 1
}
# stop_by_path FAST TERM KILL: SIGTERM every process running exactly "$b", look up to TERM times
# whether they are gone (the first FAST looks every 20 ms, then every 100 ms), then SIGKILL and
# look up to KILL times. Prints `none`, `stopped PIDS` or `killed PIDS`; returns 1 if a process
# survives SIGKILL. This shell's own pid is never signalled (its executable is sh).
stop_by_path() {
  targets=$(pids)
  [ -n "$targets" ] || { echo none; return 0; }
  # shellcheck disable=SC2086  # PIDS, one word each
  kill -TERM $targets 2>/dev/null
  _looks "$1" "$2"
  # shellcheck disable=SC2086  # one line: the PIDS joined by spaces
  _alive || { echo "stopped" $targets; return 0; }
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null
  _looks "$1" "$3"
  _alive && { echo "survived SIGKILL:$left" >&2; return 1; }
  # shellcheck disable=SC2086
  echo "killed" $targets
}
_alive() {
  left=
  for p in $targets; do
    runs "$p" && left="$left $p"
  done
  [ -n "$left" ]
}
_looks() {
  i=0
  while _alive && [ "$i" -lt "$2" ]; do
    if [ "$i" -lt "$1" ]; then sleep 0.02; else sleep 0.1; fi; i=$((i + 1))
  done
}

