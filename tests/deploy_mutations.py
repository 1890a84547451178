"""Deliberate breaks of the deploy's promises; each must make at least one test fail.

    python tests/deploy_mutations.py            # every break, one after the other

Each break is applied to the working tree, the tests that guard it run, and the file is put
back whatever happens. Exit 1 if any break went unnoticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (what breaks, file, text, replacement, tests that must fail)
BREAKS = [
    (
        "the upload's sha256 is not compared before the swap",
        "gbdeploy/deploy/deployment.py",
        "if got != self.sha256:",
        "if False:",
        "tests/test_deploy_faults.py::test_a_damaged_upload_is_caught_before_the_swap",
    ),
    (
        "the stop matches by pattern (`pgrep -f`), not by executable",
        "gbdeploy/probes.py",
        '"targets=$(pids)",',
        '"targets=$(pgrep -f \\"$b\\" | tr \\"\\\\n\\" \\" \\")",',
        "tests/test_probes.py::test_stop_terms_the_binary_and_spares_everything_else",
    ),
    (
        "a failed preflight does not stop the deploy",
        "gbdeploy/deploy/layout.py",
        'if [ "$bad" != 0 ]; then',
        "if false; then",
        "tests/test_deploy_faults.py::test_a_config_mistake_is_refused_before_anything_stops",
    ),
]


def main() -> int:
    unnoticed = []
    for what, name, text, replacement, tests in BREAKS:
        path = ROOT / name
        original = path.read_text()
        if original.count(text) != 1:
            print(f"cannot apply (the code changed?): {what}")
            unnoticed.append(what)
            continue
        try:
            path.write_text(original.replace(text, replacement))
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", tests],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
        finally:
            path.write_text(original)
        caught = run.returncode != 0
        print(f"{'caught    ' if caught else 'UNNOTICED '} {what}")
        if not caught:
            unnoticed.append(what)
    return 1 if unnoticed else 0


if __name__ == "__main__":
    sys.exit(main())
