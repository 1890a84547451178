# shellcheck shell=sh
# gbdeploy's far-end functions on the proxy target (caddy_switch.py): the Caddyfile changed by the
# operations guide's rules. Each ends the script on a failure; exit 3 says the file changed since
# it was read (nothing done).

# unchanged_since_read F SHA: ends the script (exit 3) unless F's bytes still have SHA.
unchanged_since_read() {
  printf '%s  %s\n' "$2" "$1" | sha256sum -c --status || {
    echo "$1 changed since it was read: nothing done, deploy again" >&2; exit 3; }
}
# caddy_backup F B SHA: F, as read (SHA), copied to B; a B holding other bytes is never
# overwritten (the next free B-N is taken). Prints the backup's path.
caddy_backup() {
  f=$1 b=$2
  unchanged_since_read "$f" "$3"
  if [ -e "$b" ] && ! cmp -s -- "$f" "$b"; then
    n=2; while [ -e "$b-$n" ]; do n=$((n + 1)); done; b="$b-$n"
  fi
  [ -e "$b" ] || cp -p -- "$f" "$b" || exit
  printf '%s\n' "$b"
}
# caddy_write F NEW SHA TEXT CADDY: TEXT in place of F (read with SHA): written at NEW beside it
# with F's owner and mode, validated by CADDY there, then renamed over F (atomic in one directory).
caddy_write() {
  f=$1 new=$2
  if [ -L "$f" ]; then
    echo "$f is a symbolic link: give switch.caddyfile the file it points to" >&2; exit 2
  fi
  unchanged_since_read "$f" "$3"
  trap 'rm -f -- "$new"' EXIT
  cp -p -- "$f" "$new" || exit
  printf '%s' "$4" > "$new" || exit
  "$5" validate --adapter caddyfile --config "$new" || exit
  mv -f -- "$new" "$f" || exit
}
# caddy_restore F B NEW: B's bytes back at F, atomically (through NEW), with F's owner and mode.
caddy_restore() {
  f=$1 b=$2 new=$3
  trap 'rm -f -- "$new"' EXIT
  cp -p -- "$f" "$new" || exit
  cat -- "$b" > "$new" || exit
  mv -f -- "$new" "$f" || exit
}
