"""What runs on a target, and a way to run it here. So far the far end's files and `LocalRemote`;
the connection, session, transfer and probes modules are still at `gbdeploy/connection.py`,
`deploy/session.py`, `transfer.py` and `probes.py`.

far_end/   the code that runs on the target, as real files shipped with the package:
           `procs.sh` and `lib.sh` (the shell functions every deploy script calls), and
           `helper.py` (the session helper and the upload's receiver, Python 3.4).
           Python sends the library after the quoted variable prelude, then the script's own
           lines (`deploy/layout.py`); the files and every script built from them are linted
           in the tests (shellcheck, `dash -n`; the helper against Python 3.4's syntax).
local.py   `LocalRemote`: `run` over a local sh, for the fast test tier (tests/test_fast_tier.py).
"""
