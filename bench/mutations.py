"""Deliberate breaks of gbdeploy's promises, and whether the test suite notices each one.

    python bench/mutations.py [--only NAME] [--list]

Each mutation replaces one exact piece of text in one file of a throw-away copy of this checkout
(the text must occur exactly once, so a mutation that no longer applies fails loudly instead of
passing), then runs the tests named for it in that copy. Those tests first run on the unbroken
copy and must pass there; a mutation is *caught* when at least one of them then fails. The script
exits 1 if any mutation survives, no longer applies, or has tests that fail unbroken.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "skip-upload-check",
        "the upload's sha256 is compared with the artifact's before the swap",
        "gbdeploy/deploy/deployment.py",
        "if got != self.sha256:",
        "if False:",
        ("tests/test_deploy_faults.py::test_a_damaged_upload_is_caught_before_the_swap",),
    ),
    Mutation(
        "stop-by-pattern",
        "the stop matches the exact executable, never by pattern (which hits bystanders)",
        "gbdeploy/remote/far_end/procs.sh",
        "targets=$(pids)",
        'targets=$(pgrep -f "$b" | tr "\\n" " ")',
        ("tests/test_service.py::test_stop_terms_the_binary_and_spares_everything_else",),
    ),
    Mutation(
        "preflight-ignored",
        "a failed target preflight stops the deploy before anything is stopped",
        "gbdeploy/deploy/layout.py",
        'if [ "$bad" != 0 ]; then',
        "if false; then",
        ("tests/test_deploy_faults.py::test_a_config_mistake_is_refused_before_anything_stops",),
    ),
    Mutation(
        "workflow-prints-key",
        "the rendered workflow never prints the deploy key",
        "gbdeploy/workflows.py",
        """'  echo "deploy key written"\\n'""",
        """f'  cat "{SSH_DIR}/deploy_key"\\n'""",
        ("tests/test_workflows.py", "tests/test_runner.py"),
    ),
    Mutation(
        "reporter-unmasked",
        "the Reporter masks the token in everything it prints",
        "gbdeploy/output.py",
        "self.stream.write(redact(text, *self.secrets))",
        "self.stream.write(text)",
        ("tests/test_output.py",),
    ),
)


def copy_checkout(into: Path) -> Path:
    """A clone of this checkout (the rendered workflows pin its commit) with the tracked and
    untracked-but-not-ignored files laid over it as they are in the working tree."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(into)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if not source.is_file():
            continue
        target = into / raw.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shared = ROOT.parent / "shared"
    if shared.exists() and not (into.parent / "shared").exists():
        (into.parent / "shared").symlink_to(shared)
    return into


def apply(mutation: Mutation, checkout: Path) -> None:
    path = checkout / mutation.path
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise LookupError(f"{mutation.path}: the text to break occurs {count} times, not once")
    path.write_text(text.replace(mutation.old, mutation.new))


def run_tests(mutation: Mutation, checkout: Path) -> subprocess.CompletedProcess[str]:
    # The copy's own packages come first, so the tests import the broken code, not this checkout.
    env = dict(os.environ, PYTHONPATH=f"{checkout}{os.pathsep}{checkout / 'sandbox'}")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the mutation with this name")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name == args.only]
    if args.list or not chosen:
        for mutation in MUTATIONS:
            print(f"{mutation.name}: {mutation.promise}")
        return 0 if chosen or args.list else 2
    survived = 0
    for mutation in chosen:
        with tempfile.TemporaryDirectory(prefix="gbdeploy-mutant-") as scratch:
            checkout = copy_checkout(Path(scratch) / "main")
            # The control: unbroken, the same tests must pass, or a failure proves nothing.
            control = run_tests(mutation, checkout)
            if control.returncode != 0:
                last = (control.stdout.strip().splitlines() or ["(no output)"])[-1]
                print(f"BASELINE {mutation.name}: its tests fail without the break: {last}")
                survived += 1
                continue
            try:
                apply(mutation, checkout)
            except LookupError as error:
                print(f"STALE    {mutation.name}: {error}")
                survived += 1
                continue
            result = run_tests(mutation, checkout)
        caught = result.returncode not in (0, 5)
        survived += not caught
        last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"{'caught' if caught else 'SURVIVED':8} {mutation.name}: {last}")
    print(f"{len(chosen) - survived} of {len(chosen)} breaks caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
