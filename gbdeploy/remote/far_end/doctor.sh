# shellcheck shell=sh
# gbdeploy doctor's far-end functions (gbdeploy/doctor/): what a check reads, printed as its parser
# (doctor/parsers/) reads it, and the one repair that is more than a command. Sent ahead of a
# check's one call line.

# listeners PORT…: for each PORT, `### PORT` then `PID EXE` of each process listening on it
# (`? ?` for a socket whose process this user cannot see); exit 127 without ss.
listeners() {
  command -v ss >/dev/null || exit 127
  for port in "$@"; do
    printf '### %s\n' "$port"
    ss -Htlnp "sport = :$port" | while read -r line; do
      pids=$(printf '%s\n' "$line" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
      [ -n "$pids" ] || { echo "? ?"; continue; }
      for pid in $pids; do printf '%s %s\n' "$pid" "$(readlink -- "/proc/$pid/exe")"; done
    done
  done
}
# service_units: `UNIT<TAB>ACTIVE<TAB>ENABLED<TAB>EXECSTART` for each systemd service unit loaded
# (exit 127 without systemctl).
service_units() {
  command -v systemctl >/dev/null || exit 127
  systemctl list-units --type=service --all --plain --no-legend --no-pager |
    while read -r unit _ active _; do
      printf '%s\t%s\t%s\t%s\n' "$unit" "$active" \
        "$(systemctl is-enabled "$unit" 2>/dev/null)" \
        "$(systemctl show -p ExecStart --value "$unit")"
    done
}
# service_files: `UNIT<TAB>STATE<TAB>EXECSTART` for each systemd service unit file (exit 127
# without systemctl).
service_files() {
  command -v systemctl >/dev/null || exit 127
  systemctl list-unit-files --type=service --no-legend --no-pager |
    while read -r unit state _; do
      printf '%s\t%s\t%s\n' "$unit" "$state" \
        "$(systemctl show -p ExecStart --value "$unit" | tr '\n' ' ')"
    done
}
# process_owners BINARY: `PID USER` of every process running exactly BINARY (by /proc/PID/exe).
process_owners() {
  for p in /proc/[0-9]*; do
    [ "$(readlink -- "$p/exe" 2>/dev/null)" = "$1" ] || continue
    printf '%s %s\n' "${p#/proc/}" "$(stat -c %U -- "$p")"
  done
  true
}
# schedules MARKER ETC KIND…: everything cron (ETC's crontab, cron.d, cron.KIND) and systemd
# timers run here, each source after a MARKER line, as parse_schedules reads it.
schedules() {
  m=$1 etc=$2; shift 2
  printf '%scrontab -l\n' "$m"; crontab -l 2>/dev/null
  for f in "$etc"/crontab "$etc"/cron.d/*; do
    [ -f "$f" ] || continue; printf '%sfile %s\n' "$m" "$f"; cat -- "$f"; echo
  done
  for d in "$@"; do
    for f in "$etc/cron.$d"/*; do
      [ -f "$f" ] || continue; printf '%s%s %s\n' "$m" "$d" "$f"; cat -- "$f"; echo
    done
  done
  printf '%stimers\n' "$m"; command -v systemctl >/dev/null || exit 0
  systemctl list-timers --all --plain --no-legend --no-pager |
    awk 'NF >= 2 {print $(NF-1), $NF}' | while read -r timer unit; do
      printf '%s\t%s\t%s\t%s\n' "$timer" "$unit" \
        "$(systemctl show -p TimersCalendar --value "$timer" | tr '\n' ' ')" \
        "$(systemctl show -p ExecStart --value "$unit" | tr '\n' ' ')"
    done
}
# resolve_names NAME…: `### NAME`, what getent (the system resolver) says, `## exit CODE`.
resolve_names() {
  for n in "$@"; do printf '### %s\n' "$n"; getent hosts "$n"; printf '## exit %s\n' "$?"; done
}
# flood_jail JAIL: `### KEY` and fail2ban's value of each of JAIL's settings the check reads.
flood_jail() {
  fail2ban-client status "$1" >/dev/null || return
  for k in maxretry findtime bantime logpath failregex; do
    printf '### %s\n' "$k"; fail2ban-client get "$1" "$k" || exit
  done
}
# jail_files DIR: each file fail2ban reads for its jails, in its order, after a `### PATH` line
# (PATH relative to DIR); nothing when DIR does not exist.
jail_files() {
  cd -- "$1" 2>/dev/null || exit 0
  for f in jail.conf jail.d/*.conf jail.local jail.d/*.local; do
    [ -f "$f" ] || continue; printf '### %s\n' "$f"; cat -- "$f"; echo
  done
}
# file_guard PATH: `MODE OWNER GROUP` of PATH, then `git DIR` for each directory at or above it
# that holds a `.git` (a git work tree), or `missing`.
file_guard() {
  [ -e "$1" ] || { echo missing; return 0; }
  stat -c '%a %U %G' -- "$1" && d=$(dirname -- "$1") && while :; do
    if [ -e "$d/.git" ]; then printf 'git %s\n' "$d"; fi
    [ "$d" = / ] && break; d=$(dirname -- "$d")
  done
}
# files_mentioning WORD PATH…: each PATH that is a text file holding WORD, after a `### PATH` line.
files_mentioning() {
  w=$1; shift
  for f in "$@"; do
    if [ -f "$f" ] && grep -Iqs -- "$w" "$f"; then printf '### %s\n' "$f"; cat -- "$f"; echo; fi
  done
}
# container_configs MARKER TOOL…: each container's expanded config after a `MARKER NAME` line
# (TOOL: the words that call lxc or incus, `sudo -n incus`).
container_configs() {
  m=$1; shift
  for c in $("$@" list --format csv -c n); do
    printf '%s%s\n' "$m" "$c"; "$@" config show "$c" --expanded
  done
}
# caddy_storage F NEW SHA TEXT CADDY ROOT (doctor --fix): TEXT (F with a storage root) in place of
# F as read (SHA), validated first at NEW; F backed up beside it, written in place (same inode,
# owner, mode), reloaded; on a failed reload the backup goes back and is reloaded (exit 4). Exit
# 3, nothing done: F changed since it was read, or ROOT does not exist yet.
caddy_storage() {
  f=$1 new=$2 c=$5
  test -d "$6" || { echo "storage root $6 does not exist: create it and copy the certificates \
from ~/.local/share/caddy into it first" >&2; exit 3; }
  printf '%s  %s\n' "$3" "$f" | sha256sum -c --status ||
    { echo "$f changed since doctor read it: run doctor again" >&2; exit 3; }
  trap 'rm -f -- "$new"' EXIT
  printf '%s' "$4" > "$new" || exit
  "$c" validate --config "$new" --adapter caddyfile || exit
  backup=$f.bak-$(date +%Y%m%d%H%M%S)
  cp -p -- "$f" "$backup" || exit
  cat -- "$new" > "$f" || exit
  "$c" reload --config "$f" --adapter caddyfile || {
    cat -- "$backup" > "$f" || exit
    "$c" reload --config "$f" --adapter caddyfile || exit
    echo 'reload failed: the backup is back in place' >&2; exit 4
  }
  echo "backup: $backup"
}
