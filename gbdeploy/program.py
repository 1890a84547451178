"""The `gbdeploy` program: Invoke's Program with gbdeploy's tasks and config."""

from __future__ import annotations

import sys

from invoke import Program

from . import __version__
from .config import GbdeployConfig
from .tasks import namespace


class GbdeployProgram(Program):
    def update_config(self, merge: bool = True) -> None:
        # A built-in namespace has no tasks.py to locate the project by; the config found
        # gbdeploy.yaml from the current directory upward when it was created.
        self.config.load_project(merge=False)
        super().update_config(merge=merge)


program = GbdeployProgram(
    name="gbdeploy",
    binary="gbdeploy",
    version=__version__,
    namespace=namespace,
    config_class=GbdeployConfig,
)


def help_first(argv: list[str]) -> list[str]:
    """`gbdeploy release --help` means `gbdeploy --help release` (Invoke would take `--help` as
    the value of the first positional option)."""
    for index, word in enumerate(argv[1:], 1):
        if word in namespace.task_names and any(a in ("-h", "--help") for a in argv[index + 1 :]):
            return [argv[0], "--help", word]
    return argv


# Invoke has no optional positional arguments: `gbdeploy wait 123` and `gbdeploy runs botserver`
# (DESIGN.md) become `wait --run-id 123` and `runs --component botserver`.
OPTIONAL_POSITIONALS = {"wait": "--run-id", "runs": "--component", "status": "--component"}


def optional_positionals(argv: list[str]) -> list[str]:
    """The word right after one of these task names, when it is not an option, gets its flag."""
    for index, word in enumerate(argv[1:-1], 1):
        flag = OPTIONAL_POSITIONALS.get(word)
        following = argv[index + 1]
        if flag and not following.startswith("-"):
            return [*argv[: index + 1], flag, *argv[index + 1 :]]
        if word in namespace.task_names:
            break
    return argv


def main() -> None:
    program.run(optional_positionals(help_first(sys.argv)))
