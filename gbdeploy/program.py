"""The `gbdeploy` program: Invoke's Program with gbdeploy's tasks and config."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from invoke import Exit, ParseError

from . import __version__
from .cli import OPTIONAL_POSITIONALS, CliProgram, parse_problem
from .config import token_values
from .config_layers import CONFIG_LOAD_ERRORS, GbdeployConfig, check_runtime_path, config_load_error
from .errors import ConfigError, UsageError, internal_error
from .tasks import namespace


class GbdeployProgram(CliProgram):
    """Invoke's Program, with exit code 2 for bad input and bad config files (Invoke exits 1 on a
    parse error and shows a traceback for a broken YAML file), and no traceback ever: anything
    unexpected is reported as a bug, exit 1."""

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
        try:
            super().run(argv, exit)
        except BrokenPipeError:  # `gbdeploy help | head`: the reader has what it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the final flush does not fail again
            if exit:
                sys.exit(0)
        except Exception as error:  # every expected error became an Exit below or in the tasks
            print(internal_error(error, *token_values()), file=sys.stderr)
            if exit:
                sys.exit(1)

    @contextmanager
    def _config_errors(self) -> Iterator[None]:
        try:
            yield
        except CONFIG_LOAD_ERRORS as error:
            problem = config_load_error(error, getattr(self, "config", None))
            raise Exit(f"gbdeploy: error: {problem}", code=problem.exit_code) from None
        except ConfigError as error:
            raise Exit(f"gbdeploy: error: {error}", code=error.exit_code) from None

    def create_config(self) -> None:
        with self._config_errors():  # system and user files are read here
            super().create_config()

    def parse_core(self, argv: list[str] | None) -> None:
        with self._usage_errors():
            super().parse_core(argv)

    def parse_tasks(self) -> None:
        with self._usage_errors():
            super().parse_tasks()

    def parse_cleanup(self) -> None:
        with self._usage_errors():  # `--help NAME` of an unknown NAME
            super().parse_cleanup()

    @contextmanager
    def _usage_errors(self) -> Iterator[None]:
        """A bad command line is exit 2, with the nearest command or option when it was a
        typo. Invoke casts a typed option's value (`--limit abc`) while parsing, and lets the
        cast's ValueError through."""
        try:
            yield
        except ParseError as error:
            problem = parse_problem(error, namespace.task_names, self.initial_context.flags)
            raise Exit(f"gbdeploy: error: {problem}", code=UsageError.exit_code) from None
        except ValueError as error:
            raise Exit(
                f"gbdeploy: error: an option's value is not of its type: {error}",
                code=UsageError.exit_code,
            ) from None

    def update_config(self, merge: bool = True) -> None:
        with self._config_errors():
            check_runtime_path(self.args.config.value)
            # A built-in namespace has no tasks.py to locate the project by; the config found
            # gbdeploy.yaml from the current directory upward when it was created.
            self.config.load_project(merge=False)
            super().update_config(merge=merge)

    def execute(self) -> None:
        with self._config_errors():  # GBDEPLOY_* variables are read here
            super().execute()


program = GbdeployProgram(
    name="gbdeploy",
    binary="gbdeploy",
    version=__version__,
    namespace=namespace,
    config_class=GbdeployConfig,
)


def help_first(argv: list[str]) -> list[str]:
    """`gbdeploy release --help` and `gbdeploy help release` mean `gbdeploy --help release`
    (Invoke would take `--help` as the value of the first positional option)."""
    if argv[1:2] == ["help"]:
        return [argv[0], "--help", *argv[2:3]]
    for index, word in enumerate(argv[1:], 1):
        if word in namespace.task_names and any(a in ("-h", "--help") for a in argv[index + 1 :]):
            return [argv[0], "--help", word]
    return argv


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
