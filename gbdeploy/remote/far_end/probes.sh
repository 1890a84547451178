# shellcheck shell=sh
# gbdeploy's probes (remote/probes.py): facts about a target, one function each, sent (after
# procs.sh) ahead of the one call line of a probe. Each looks for the tools it needs and falls back,
# since a production container may lack curl, sha256sum or python3. A file that does not exist
# prints `missing`.

# processes_of BINARY: `PID UID USER -|deleted` for each process whose executable is BINARY.
# shellcheck disable=SC2154  # b: set by procs.sh's resolve
processes_of() {
  resolve "$1"
  for pid in $(pids); do
    e=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    owner=$(stat -c "%u %U" "/proc/$pid" 2>/dev/null) || continue
    case $e in "$b") d=- ;; *) d=deleted ;; esac
    printf '%s %s %s\n' "$pid" "$owner" "$d"
  done
}
# file_stat PATH: `MTIME SIZE UID OWNER GROUP MODE` (MODE in octal).
file_stat() {
  [ -e "$1" ] || { echo missing; return 0; }
  stat -c '%Y %s %u %U %G %a' -- "$1" 2>/dev/null || python3 -c 'import grp,os,pwd,sys
s=os.stat(sys.argv[1])
def name(f,i):
 try: return f(i)[0]
 except KeyError: return "UNKNOWN"
print(int(s.st_mtime),s.st_size,s.st_uid,name(pwd.getpwuid,s.st_uid),name(grp.getgrgid,s.st_gid),"%o"%(s.st_mode&0o7777))' "$1"
}
# file_sha256 PATH: its sha256 with the first of sha256sum, busybox, shasum, openssl, python3.
file_sha256() {
  [ -e "$1" ] || { echo missing; return 0; }
  if command -v sha256sum >/dev/null 2>&1; then sha256sum -- "$1"
  elif command -v busybox >/dev/null 2>&1; then busybox sha256sum "$1"
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1"
  elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r "$1"
  elif command -v python3 >/dev/null 2>&1; then python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
 for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
  else echo 'no sha256 tool (sha256sum busybox shasum openssl python3)' >&2; return 127
  fi
}
# file_contains PATH NEEDLE: `yes` when the bytes of PATH hold the line NEEDLE, else `no` (grep -a
# -F: a binary file read as text, a fixed string; python3 without grep).
file_contains() {
  [ -e "$1" ] || { echo missing; return 0; }
  if command -v grep >/dev/null 2>&1; then
    grep -a -q -F -e "$2" -- "$1"; rc=$?
    case $rc in 0) echo yes ;; 1) echo no ;; *) return "$rc" ;; esac
  else python3 -c 'import sys
n=sys.argv[2].encode();t=b""
with open(sys.argv[1],"rb") as f:
 for b in iter(lambda: f.read(1<<20), b""):
  t+=b
  if n in t: print("yes"); sys.exit(0)
  t=t[-len(n):]
print("no")' "$1" "$2"
  fi
}
# last_line PATH: `present` and its last line.
last_line() { [ -e "$1" ] || { echo missing; return 0; }; echo present; tail -n 1 -- "$1"; }
# site_get MARK URL SCHEME HOST PORT PATH SECONDS [CA]: GET URL, a site the proxy on this host
# serves, from its own listener: HOST resolved to 127.0.0.1 whatever DNS says, an https
# certificate verified against HOST (CA, when given, as the trust anchor; never unverified).
# curl (the status follows a MARK line), else python3 (the raw answer).
site_get() {
  if command -v curl >/dev/null 2>&1; then
    # (curl's --resolve names an IPv6 host without brackets, as HOST is)
    set -- "$1" "$2" "$4:$5:127.0.0.1" "$7" "${8:-}"
    if [ -n "$5" ]; then
      curl -sS --max-time "$4" --resolve "$3" --cacert "$5" -w "\n$1%{http_code}\n" "$2"
    else curl -sS --max-time "$4" --resolve "$3" -w "\n$1%{http_code}\n" "$2"; fi
  elif command -v python3 >/dev/null 2>&1; then
    shift 2
    python3 - "$@" <<'PY'
import socket, ssl, sys
scheme, host, port, path, seconds = sys.argv[1:6]
ca = sys.argv[6] if len(sys.argv) > 6 else ""
try:
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=float(seconds))
    if scheme == "https":
        context = ssl.create_default_context(cafile=ca or None)
        s = context.wrap_socket(s, server_hostname=host)
    name = host if port in ("80", "443") else host + ":" + port
    request = "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, name)
    s.sendall(request.encode())
    answer = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
except Exception as e:
    sys.exit("%s: %s" % (type(e).__name__, e))
sys.stdout.write(answer.decode("utf-8", "replace"))
PY
  else echo 'no HTTP client on the proxy target (curl, python3)' >&2; return 127
  fi
}
# http_get MARK URL SECONDS [HOST PORT REQUEST]: GET URL within SECONDS: curl (https allowed with
# verification off: the services serve their own certificate; the status follows a MARK line),
# else wget (its headers on stderr, shown), else, given a REQUEST (plain http), bash's /dev/tcp to
# HOST:PORT.
http_get() {
  if command -v curl >/dev/null 2>&1; then
    curl -sS -k --max-time "$3" -w "\n$1%{http_code}\n" "$2"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -S -O - -T "$3" --no-check-certificate "$2" 2>&1
  elif [ -n "$6" ] && command -v bash >/dev/null 2>&1; then
    # shellcheck disable=SC2016  # expanded by that bash
    set -- 'exec 3<>"/dev/tcp/$1/$2" || exit 7; printf %s "$3" >&3; cat <&3' "$3" "$4" "$5" "$6"
    if command -v timeout >/dev/null 2>&1; then timeout "$2" bash -c "$1" bash "$3" "$4" "$5"
    else bash -c "$1" bash "$3" "$4" "$5"; fi
  else echo 'no HTTP client on the target (curl, wget, bash)' >&2; return 127
  fi
}
