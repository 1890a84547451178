"""Talking to a target: the connection, what runs there, and a way to run it here.

connection.py  `Remote`: one SSH connection (Fabric) to a target, its transport (`alive`, `cut`,
               `close_quietly`), the container wrapper, `quote` for every remote value.
session.py     `Session`: one helper process on the target answering many requests on one channel.
transfer.py    The upload: hashed, optionally compressed, into a temporary file renamed in place.
artifact_source.py  The artifact as the upload reads it: once, hashed, optionally through zstd.
probes.py      Read-only facts about a target: each a command and the parser of its output.

far_end/   the code that runs on the target, as real files shipped with the package:
           `procs.sh` and `lib.sh` (the shell functions every deploy script calls), and
           `helper.py` (the session helper and the upload's receiver, Python 3.4); `proxy.sh`
           (the switch's Caddyfile changes) and `doctor.sh` (what doctor's checks read).
           Python sends the library after the quoted variable prelude, then the script's own
           lines (`deploy/layout.py`); the files and every script built from them are linted
           in the tests (shellcheck, `dash -n`; the helper against Python 3.4's syntax).
local.py   `LocalRemote`: `run` over a local sh, for the fast test tier (tests/test_fast_tier.py).
"""
