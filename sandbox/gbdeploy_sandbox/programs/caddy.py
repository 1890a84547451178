"""`caddy validate|reload --config FILE --adapter caddyfile`, for the proxy container's Caddy.

`validate` is Debian's real caddy (`apt-get install caddy`, as .ci/setup does): this runs it.
`reload` cannot be: it posts the adapted config to a running Caddy's admin endpoint
(localhost:2019), and a Caddy running the production's Caddyfile would bind ports 80 and 443 and
ask an ACME CA for certificates of its domains. So `reload` has the real caddy adapt and validate
the file first (an invalid file fails as a real reload does), then records the file's sha256 in
`ROOT/caddy.reloads`: what a running Caddy would have loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

MISSING = "caddy stand-in: Debian's caddy is not installed (bash .ci/setup installs it)\n"


def real_caddy() -> str | None:
    """The caddy on PATH that is not this stand-in."""
    here = Path(sys.argv[0]).resolve().parent
    path = os.pathsep.join(
        d
        for d in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if d and Path(d).resolve() != here
    )
    return shutil.which("caddy", path=path)


def main(root: str, argv: list[str]) -> int:
    verb = argv[0] if argv else ""
    if verb not in ("validate", "reload") or "--adapter" not in argv or "--config" not in argv:
        sys.stderr.write(f"caddy stand-in: unsupported: {' '.join(argv)}\n")
        return 2
    caddy = real_caddy()
    if caddy is None:
        sys.stderr.write(MISSING)
        return 127
    validated = subprocess.run([caddy, "validate", *argv[1:]], check=False)
    if verb == "validate" or validated.returncode != 0:
        return validated.returncode
    path = argv[argv.index("--config") + 1]
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    with open(Path(root) / "caddy.reloads", "a") as log:
        log.write(f"{path} {digest}\n")
    return 0
