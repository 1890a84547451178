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


# --- strategy switch (gbdeploy/deploy/switch.py): two processes run from the same path, the old
# one from its unlinked inode (`"$b (deleted)"`), so each is stopped by its pid, never by path.
# stop_pid PID LOOKS: SIGTERM exactly PID if it still runs "$b" (a reused pid is left alone), look
# up to LOOKS times (every 50 ms), then SIGKILL. Prints `none PID`, `stopped PID` or `killed PID`;
# returns 1 if it survives SIGKILL.
stop_pid() {
  runs "$1" || { echo "none $1"; return 0; }
  kill -TERM "$1" 2>/dev/null
  i=0; while runs "$1" && [ "$i" -lt "$2" ]; do sleep 0.05; i=$((i + 1)); done
  runs "$1" || { echo "stopped $1"; return 0; }
  kill -KILL "$1" 2>/dev/null
  i=0; while runs "$1" && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  runs "$1" && { echo "survived SIGKILL: $1" >&2; return 1; }
  echo "killed $1"
}
# stop_all_but LOOKS KEEP…: stop_pid every process running "$b" except the pids KEEP (the ones
# that ran before the switch began).
stop_all_but() {
  looks=$1; shift; rc=0
  for p in $(pids); do
    case " $* " in *" $p "*) continue ;; esac
    stop_pid "$p" "$looks" || rc=1
  done
  return "$rc"
}
# switch_place SOURCE OWNER: put SOURCE (B.new, or a kept release) at B with nothing stopped: B
# kept as P with its recipe (`$L/had` says whether there was one), SOURCE owned by OWNER and
# renamed over B; the process running the old B keeps its inode.
switch_place() {
  if [ -f "$B" ]; then
    same_bytes "$B" "$P" || return 1
    if [ -f "$G" ]; then cp -p -- "$G" "$P.start" || return 1; else rm -f -- "$P.start"; fi
    echo 1 > "$L/had" || return 1
  else echo 0 > "$L/had" || return 1
  fi
  if [ "$1" != "$N" ]; then rm -f -- "$N"; same_bytes "$1" "$N" || return 1; fi
  chown -- "$2" "$N" && chmod 0755 -- "$N" && rename_over "$N" "$B"
}
# switch_unplace: undo switch_place (P back at B with its recipe, or no B when there was none);
# nothing is stopped or started.
switch_unplace() {
  case $(cat "$L/had" 2>/dev/null) in
  1) rm -f -- "$B.restore"; same_bytes "$P" "$B.restore" && rename_over "$B.restore" "$B" || return 1
     if [ -f "$P.start" ]; then cp -p -- "$P.start" "$G"; else rm -f -- "$G"; fi ;;
  0) rm -f -- "$B" "$G" ;;
  *) return 0 ;;
  esac
  rm -f -- "$S"
}
# keep_binary_of PID: after a recovery, B is the binary PID runs: already (`binary-kept`), else
# B.prev when that is it, else its bytes copied back from /proc/PID/exe (`binary-restored`).
# shellcheck disable=SC3013
keep_binary_of() {
  if [ "/proc/$1/exe" -ef "$B" ]; then echo "binary-kept"; return 0; fi
  rm -f -- "$B.restore"
  if [ -f "$P" ] && [ "/proc/$1/exe" -ef "$P" ]; then same_bytes "$P" "$B.restore"
  else cp -- "/proc/$1/exe" "$B.restore" && chmod 0755 -- "$B.restore"
  fi && rename_over "$B.restore" "$B" && rm -f -- "$S" && echo "binary-restored"
}
# listening_inodes PORT: `inodes`, ` INODE ` for each socket listening on PORT. `ss` (netlink)
# when there is one, else /proc/net/tcp*: slow to read on a host holding many TIME_WAIT sockets
# (80 000 on the test machine: 0.16 s a read, seconds under load).
listening_inodes() {
  if command -v ss >/dev/null 2>&1; then
    inodes=$(ss -Htn -l -e "sport = :$1" | grep -o 'ino:[0-9]*' | sed 's/^ino:\(.*\)$/ \1 /' \
      | tr -d '\n')
  else
    inodes=$(awk -v p="$(printf %04X "$1")" \
      '$4 == "0A" && substr($2, length($2) - 3) == p { printf " %s ", $10 }' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  fi
}
# connections PORT: `n`, the established connections whose local port is PORT.
connections() {
  if command -v ss >/dev/null 2>&1; then
    n=$(ss -Htn state established "sport = :$1" | wc -l)
  else
    n=$(awk -v p="$(printf %04X "$1")" \
      '$4 == "01" && substr($2, length($2) - 3) == p { n++ } END { print n + 0 }' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  fi
}
# serving_pids BINARY PORT: the pid of each process running BINARY that listens on PORT, one a
# line; nothing when none does (free, or another program's). Sets `b` (resolve).
serving_pids() {
  resolve "$1"
  listening_inodes "$2"
  [ -n "$inodes" ] || return 0
  for pid in $(pids); do
    for fd in "/proc/$pid/fd/"*; do
      link=$(readlink "$fd" 2>/dev/null) || continue
      case $link in "socket:["*"]") ;; *) continue ;; esac
      inode=${link#socket:[}; inode=${inode%]}
      case $inodes in *" $inode "*) echo "$pid"; break ;; esac
    done
  done
  return 0
}
# drain PORT LOOKS QUIET SLEEP: wait until nothing has been connected to PORT for QUIET looks in
# a row (one every SLEEP seconds), at most LOOKS looks. Prints `drained` or `drain timed out with
# N connections`.
drain() {
  quiet=0 i=0
  while :; do
    connections "$1"
    if [ "$n" -eq 0 ]; then quiet=$((quiet + 1)); else quiet=0; fi
    [ "$quiet" -ge "$3" ] && { echo drained; return 0; }
    [ "$i" -ge "$2" ] && { echo "drain timed out with $n connections"; return 0; }
    sleep "$4"; i=$((i + 1))
  done
}
