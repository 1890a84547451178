"""The command line around the tasks: short flags with one meaning each, `-v`/`-q`, help that
shows gbdeploy first, option errors as exit 2, the production-defaults notice and the
confirmation before a deploy or rollback from a terminal.

Kept apart from program.py (Invoke's Program and its error handling) so each can change alone:
`CliProgram` is a mixin placed before `invoke.Program`.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from invoke import Argument, Exit, Program, Task
from invoke import task as invoke_task

from .config import Settings, Target
from .config_layers import GbdeployConfig, load_config, load_settings
from .config_view import layer_file
from .output import options

VERBOSE = "more detail: e.g. the full remote scripts of a --dry-run plan"
QUIET = "only results and errors"

# One meaning per short flag, in every command. Options not named here have only a long name.
SHORT_FLAGS = {
    "dry_run": "d",
    "lines": "n",
    "limit": "n",
    "follow": "f",
    "timeout": "t",
    "commit": "c",
    "artifact": "a",
    "strategy": "s",
    "json": "j",
    "yes": "y",
    "root": "r",
    "message": "m",
}

# The order commands are shown in (any other task follows, by name).
COMMAND_ORDER = (
    "release",
    "deploy",
    "verify",
    "rollback",
    "start",
    "stop",
    "restart",
    "lock",
    "exec",
    "history",
    "logs",
    "status",
    "runs",
    "wait",
    "config",
    "doctor",
    "workflows",
    "maintain",
    "demo",
)

EXIT_CODES = (
    (0, "done"),
    (1, "failed, and the system was left safe (nothing changed, or rolled back)"),
    (2, "bad input, bad configuration, or a refused preflight"),
    (3, "the CI run finished unsuccessfully"),
    (4, "timed out waiting"),
    (5, "failed AND could not restore the previous state: a person must act"),
    (130, "interrupted (Ctrl-C) while nothing was being changed; a deploy is undone: 1 or 5"),
)

EXIT_CODES_BRIEF = (
    "0 done, 1 failed (left safe), 2 bad input or config, 3 CI run failed, 4 timed out, "
    "5 could not restore (act now), 130 interrupted"
)

COMPLETION = (
    'completion: eval "$(gbdeploy --print-completion-script bash)"  '
    "(in ~/.bashrc; zsh and fish likewise)"
)


class GbdeployTask(Task):
    """A task whose options take their short flag from SHORT_FLAGS only, so `-c` is `--commit`
    wherever it exists and never something else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and not opts["positional"] and short not in taken_names:
            opts["names"].append(short)
        return opts


task = functools.partial(invoke_task, klass=GbdeployTask)


@dataclass
class AfterDashes:
    """The words after `--` (`exec COMPONENT -- CMD…`) as given, one argument each: Invoke
    keeps them only joined by spaces. None: not parsed by gbdeploy's program (under `invoke`)."""

    words: list[str] | None = None


after_dashes = AfterDashes()


def words_after_dashes(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1 :] if "--" in argv else []


def command_after_dashes() -> list[str]:
    if after_dashes.words is not None:
        return after_dashes.words
    return words_after_dashes(sys.argv)


class CliProgram(Program):
    """What gbdeploy changes in Invoke's Program for its users (see the module docstring)."""

    def core_args(self) -> list[Argument]:
        return [
            *super().core_args(),
            Argument(names=("verbose", "v"), kind=bool, default=False, help=VERBOSE),
            Argument(names=("quiet", "q"), kind=bool, default=False, help=QUIET),
        ]

    def parse_core(self, argv: list[str] | None) -> None:
        super().parse_core(argv)
        self._set_verbosity()
        after_dashes.words = words_after_dashes(self.argv)

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ValueError as error:  # Invoke casting `--limit x` to int
            raise Exit(f"gbdeploy: error: {option_error(self.argv, error)}", code=2) from None
        self._set_verbosity()  # -v/-q may also follow the command

    def parse_cleanup(self) -> None:
        if self.args.complete.value:
            complete_components(self.core.remainder, self.collection)  # Exit when it did
        super().parse_cleanup()

    def _set_verbosity(self) -> None:
        verbose, quiet = self.args.verbose.value, self.args.quiet.value
        options.verbosity = 1 if verbose else -1 if quiet else 0

    # -- help
    def print_help(self) -> None:
        out = sys.stdout
        out.write(f"{self.name} {self.version}: release, deploy, verify General Bots services\n")
        out.write(f"\nUsage: {self.binary} [-v|-q] [-f FILE] COMMAND [ARGUMENTS] [OPTIONS]\n")
        out.write(f"       {self.binary} COMMAND --help      (every option of COMMAND)\n")
        out.write("\nCommands:\n")
        out.write(columns(command_summaries(self.collection)))
        out.write("\nOptions (before the command):\n")
        out.write(columns(GLOBAL_OPTIONS))
        out.write("\nExit codes:\n")
        out.write(columns([(str(code), text) for code, text in EXIT_CODES]))
        out.write(f"\n{COMPLETION}\n")

    def print_task_help(self, name: str) -> None:
        context = self.parser.contexts[name]
        positional = [arg.name for arg in context.positional_args]
        words = " ".join([*(p.upper() for p in positional), *OPTIONAL_USAGE.get(name, ())])
        out = sys.stdout
        out.write(f"Usage: {self.binary} {name} {words + ' ' if words else ''}[OPTIONS]\n\n")
        doc = self.collection[name].__doc__ or ""
        for line in doc.strip().splitlines():
            out.write(f"  {line.strip()}\n" if line.strip() else "\n")
        if context.positional_args:
            out.write("\nArguments:\n")
            out.write(columns([(a.name.upper(), a.help or "") for a in context.positional_args]))
        tuples = [
            (flags, text or "")
            for flags, text in context.help_tuples()
            if not any(flags.startswith(f"--{p.replace('_', '-')}=") for p in positional)
        ]
        out.write("\nOptions:\n")
        out.write(columns(tuples) if tuples else "  none\n")
        out.write("\nBefore the command: -v (more detail), -q (only results), -f FILE (config)\n")
        out.write(f"Exit codes: {EXIT_CODES_BRIEF}\n")


# Invoke has no optional positional arguments: `gbdeploy wait 123` and `gbdeploy runs botserver`
# become `wait --run-id 123` and `runs --component botserver` (program.optional_positionals).
OPTIONAL_POSITIONALS = {
    "wait": "--run-id",
    "runs": "--component",
    "status": "--component",
    "config": "--key",
}
# How their help shows those forms (as the README does).
OPTIONAL_USAGE = {
    "wait": ("(RUN_ID | --sha SHA)",),
    "runs": ("[COMPONENT]",),
    "status": ("[COMPONENT]",),
    "config": ("[KEY]",),
}


def complete_components(remainder: str, collection: Any) -> None:
    """Tab completion of a component name where a command takes one (`gbdeploy release <TAB>`,
    `status <TAB>`, `--component <TAB>`): the configured components, then Exit. Anything else
    is left to Invoke's completion (commands, options)."""
    try:
        words = shlex.split(remainder)[1:]  # after the program's name
    except ValueError:
        return
    commands = [w for w in words if w in collection.task_names]
    if not commands:
        return
    command = commands[0]
    after = words[words.index(command) + 1 :]
    takes = OPTIONAL_POSITIONALS.get(command) == "--component" or any(
        arg.name == "component" and arg.positional for arg in collection[command].get_arguments()
    )
    values = [w for w in after if not w.startswith("-")]
    wanted = (after[-1:] == ["--component"]) or (
        takes and len(values) <= 1 and (not after or not after[-1].startswith("-"))
    )
    if not wanted:
        return
    try:
        names = sorted(load_settings(load_config()).components)
    except Exception:  # a broken config must not break the shell's completion
        names = []
    for name in names:
        print(name)
    raise Exit


GLOBAL_OPTIONS = (
    ("-f FILE, --config=FILE", "a configuration file, read over every other layer"),
    ("-v, --verbose", VERBOSE),
    ("-q, --quiet", QUIET),
    ("-h, --help [COMMAND]", "this help, or a command's"),
    ("-V, --version", "the version"),
    ("-l, --list", "the commands, one a line"),
    ("--print-completion-script=SHELL", "the completion script for bash, zsh or fish"),
)


def columns(rows: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str:
    width = max(len(left) for left, _ in rows)
    return "".join(f"  {left:<{width}}   {right}\n" for left, right in rows)


def command_summaries(collection: Any) -> list[tuple[str, str]]:
    names = sorted(collection.task_names, key=_command_rank)
    return [(name, _summary(collection[name].__doc__)) for name in names]


def _command_rank(name: str) -> tuple[int, str]:
    return (COMMAND_ORDER.index(name) if name in COMMAND_ORDER else len(COMMAND_ORDER), name)


def _summary(doc: str | None) -> str:
    """A command's summary: the first paragraph of its docstring, as one line (a first line
    alone may stop mid-sentence)."""
    paragraph = (doc or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


_NO_IDEA = re.compile(r"^No idea what '(.*)' is!$")


def parse_problem(error: Exception, commands: Iterable[str], core_flags: Iterable[str]) -> str:
    """Invoke's "No idea what 'relase' is!" as what it is, with the nearest command or option:
    `unknown command 'relase': did you mean `release`?`."""
    found = _NO_IDEA.match(str(error))
    if not found:
        return str(error)
    word = found.group(1)
    context = getattr(error, "context", None)
    command = getattr(context, "name", None)
    if word.startswith("-"):
        flags = [*(context.flags if context else ()), *core_flags]
        what = f"unknown option {word}" + (f" for `{command}`" if command else "")
        near = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.6)
        see = f"`gbdeploy {command} --help` lists its options" if command else ""
    else:
        what = f"unknown command {word!r}"
        if command:
            what += f" (nor an argument of `{command}`)"
        near = difflib.get_close_matches(word, [*commands, "help"], n=1, cutoff=0.6)
        see = "`gbdeploy help` lists the commands"
    if near:
        return f"{what}: did you mean `{near[0]}`?"
    return f"{what}" + (f"\n  hint: {see}" if see else "")


_INVALID = re.compile(r"invalid literal for (\w+)\(\)(?: with base \d+)?: (.*)$")


def option_error(argv: list[str], error: ValueError) -> str:
    """`--limit expects a whole number, got 'x'` for Invoke's ValueError while casting."""
    found = _INVALID.search(str(error))
    if not found:
        return f"invalid option value: {error}"
    kind, shown = found.groups()
    expected = "a whole number" if kind == "int" else "a number"
    value = shown.strip("'\"")
    for index, word in enumerate(argv):
        if word.startswith("-") and "=" in word and word.split("=", 1)[1] == value:
            return f"{word.split('=', 1)[0]} expects {expected}, got {shown}"
        if word.startswith("-") and index + 1 < len(argv) and argv[index + 1] == value:
            return f"{word} expects {expected}, got {shown}"
    return f"an option expects {expected}, got {shown}"


# --- what a command says before it reaches production ---------------------------------------------
def gbdeploy_config(config: Any) -> GbdeployConfig:
    """gbdeploy's layered config. Under `invoke` a task's config is Invoke's own (prefix
    `invoke`, project = the directory of tasks.py), which holds none of gbdeploy's files: they
    are then loaded as `gbdeploy` loads them, gbdeploy.yaml found from the current directory."""
    return config if isinstance(config, GbdeployConfig) else load_config()


def project_file(config: Any) -> str | None:
    return layer_file(config, "project") or layer_file(config, "runtime")


def defaults_notice(config: Any, settings: Settings, err: TextIO | None = None) -> None:
    """With no project file (nor `-f`), say on stderr which production the command aims at."""
    if project_file(config):
        return
    user = layer_file(config, "user")
    layers = "built-in production defaults" + (f" and {user}" if user else "")
    targets = ", ".join(f"{name} = {where(t)}" for name, t in sorted(settings.targets.items()))
    forge = f"{settings.forge.url} {settings.forge.owner}/{settings.forge.repo}"
    (err or sys.stderr).write(
        f"gbdeploy: no gbdeploy.yaml in {Path.cwd()} or above: using the {layers}: "
        f"forge {forge}, targets {targets} (`gbdeploy config` shows every value)\n"
    )


# Set by CI systems: a job may run on a terminal (forgejo-runner's host mode gives each step a
# PTY) with no person to answer.
CI_VARIABLES = ("CI", "FORGEJO_ACTIONS", "GITHUB_ACTIONS")


def in_ci() -> bool:
    return any(os.environ.get(name) for name in CI_VARIABLES)


def is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


NOT_CONFIRMED = "gbdeploy: not confirmed: nothing done (--yes skips the question)"


def confirm(question: str, *, yes: bool, ask: Callable[[str], str] | None = None) -> None:
    """From a terminal, ask; anything but y/yes stops with nothing done, exit 0: the user's
    answer is not a failure. `--yes`, no terminal, or CI (`CI`, `FORGEJO_ACTIONS`,
    `GITHUB_ACTIONS` set, whatever the terminal) goes on without asking."""
    if yes or in_ci() or not is_terminal():
        return
    try:
        answer = (ask or input)(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Exit(NOT_CONFIRMED, code=0)


def where(target: Target) -> str:
    """`ssh HOST`, and the container behind it when there is one."""
    return f"ssh {target.ssh}" + (f", container {target.container}" if target.container else "")


def describe_target(settings: Settings, component: str) -> str:
    comp = settings.component(component)
    target = settings.target_of(comp)
    return f"{comp.binary} on target {target.name} ({where(target)})"


def deploy_question(
    settings: Settings, component: str, artifact: str | None, commit: str | None, recover: bool
) -> str:
    """What `deploy` is about to change, asked before it connects."""
    place = describe_target(settings, component)
    if recover:
        return (
            f"recover {component} on {place}: take over an interrupted deploy's lock and put the "
            "last healthy release back?"
        )
    built = artifact or settings.component(component).artifact
    built_from = f" (commit {commit})" if commit else ""
    return f"deploy {component} {built}{built_from} to {place}?"
