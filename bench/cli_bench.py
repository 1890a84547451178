"""How long the command line takes to answer when it does no work: `gbdeploy --list` and
`gbdeploy --help`, each a fresh interpreter, and which heavy libraries they import.

    python bench/cli_bench.py [--repeat 15]

The budget is 0.25 s for `--list` (the median): tab completion runs it on every Tab press. A
Python that merely starts and exits is measured the same way, as the floor.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("httpx", "paramiko", "fabric", "git", "gbdeploy_sandbox")
BUDGET_SECONDS = 0.25


def seconds(argv: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def heavy_imports(cwd: str) -> list[str]:
    probe = (
        "import sys\nfrom gbdeploy.program import program\n"
        "program.run(['gbdeploy', '--list'], exit=False)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
    return [name for name in out.splitlines()[-1].split(",") if name]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    repeat = parser.parse_args().repeat
    cases = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "gbdeploy --list": [sys.executable, "-m", "gbdeploy", "--list"],
        "gbdeploy --help": [sys.executable, "-m", "gbdeploy", "--help"],
    }
    with tempfile.TemporaryDirectory() as empty:  # no gbdeploy.yaml: nothing project-specific
        medians = {
            name: statistics.median(seconds(argv, empty) for _ in range(repeat))
            for name, argv in cases.items()
        }
        heavy = heavy_imports(empty)
    for name, median in medians.items():
        print(f"{name:24} median {median:.3f}s over {repeat} runs")
    print(f"heavy modules imported by --list: {', '.join(heavy) or 'none'}")
    within = medians["gbdeploy --list"] <= BUDGET_SECONDS and not heavy
    print(f"--list within {BUDGET_SECONDS}s and light: {'yes' if within else 'NO'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
