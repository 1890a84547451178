# shellcheck shell=sh
# gbdeploy's far end of `logs` (logs.py): these functions, then one line that reads the log (a
# file, or a systemd unit's journal) through them.

# log_file LOG MISSING: ends the script (`no such file`, exit MISSING) unless LOG exists.
log_file() { [ -e "$1" ] || { echo 'no such file' >&2; exit "$2"; }; }
# pattern PATTERN BAD: ends the script (exit BAD) when grep -E refuses PATTERN.
pattern() { printf '' | grep -E -e "$1" >/dev/null; [ $? -le 1 ] || exit "$2"; }
# since SINCE: the lines from the first one stamped at or after SINCE (ISO, UTC, to the second): a
# line is stamped when it starts with an ISO date and time (`T` or a space between, or after a
# `[`); an unstamped line goes with the stamped one before it. When no line is stamped, says so on
# stderr (logs.py's UNSTAMPED).
since() {
  awk -v since="$1" '{ s = $0; sub(/^\[/, "", s) }
s ~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9]/ {
  t = substr(s, 1, 19); sub(/ /, "T", t); keep = (t >= since); stamped = 1
}
keep { print }
END { if (NR > 0 && !stamped) print "gbdeploy: no line starts with a timestamp" > "/dev/stderr" }'
}
# follow READER…: run READER (`tail -F`, `journalctl -f`) in the background until our side of the
# channel closes (`cat` sees the end of its input), then stop it.
follow() { "$@" & follower=$!; cat >/dev/null; kill "$follower" 2>/dev/null; exit 0; }
# follow_matching PATTERN READER…: the same, its lines through grep -E PATTERN (a fifo between
# them; both stopped by their pids).
follow_matching() {
  pattern=$1; shift
  d=$(mktemp -d) && mkfifo -- "$d/f" || exit 1
  grep --line-buffered -E -e "$pattern" < "$d/f" & g=$!
  "$@" > "$d/f" & follower=$!
  cat >/dev/null; kill "$follower" "$g" 2>/dev/null; rm -rf -- "$d"; exit 0
}
