"""An emulated Forgejo runner: runs a workflow job's `run:` steps for real, in order, with bash.

For the demo sandbox and end-to-end tests. It knows only what gbdeploy's rendered workflows use,
and fails loudly (`UnsupportedWorkflow`, before any step runs) on anything else:

- expressions `${{ secrets.X }}`, `${{ inputs.X }}`, `${{ github.event.inputs.X }}`,
  `${{ env.X }}`, `${{ github.sha|ref|ref_name|event_name|repository|workspace|server_url|
  run_id|run_number|actor|token }}` (also under `forgejo.` and `forge.`; the token is masked),
  `${{ runner.temp|os }}`;
- `uses: actions/checkout@…` is emulated: the caller provides the checkout (a clone at the sha,
  with its submodules when the step asks for them) and the step checks that it is so, and that
  `node` is on the job's PATH, as a host-mode runner needs it for a JavaScript action;
- `shell: bash` (`bash --noprofile --norc -eo pipefail`) or no shell (`bash -e`), like the runner;
- `env:` at workflow, job and step level; `working-directory` (step or `defaults.run`).

Every `run:` step runs as forgejo-runner's host mode runs it (its act source): on a PTY in raw
mode that is the step's stdin, stdout, stderr and controlling terminal, in a new session, with
`\x04` written to it every second (no end-of-input in raw mode: a question waits forever), and
in the runner daemon's environment: a minimal PATH (`DAEMON_PATH`, no login profile, no
~/.cargo/bin) unless `RunContext.env` says otherwise.

A failing step stops the job; the rest are reported as skipped. Secret values are masked as
`***` in the job log, as the real runner does; each step's `raw_output` keeps what the step
really wrote, unmasked, so a test can tell that a secret never reached the output at all.
Nothing here depends on the Forgejo emulator: `run_job` returns a `JobResult` whose `log` is
the job log and whose `status` is the run status.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import pty
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import tty
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
CONTEXT_NAMES = ("github", "forgejo", "forge")
# forgejo-runner runs `shell: bash` and a step without `shell:` alike:
# `bash --noprofile --norc -e -o pipefail`.
BASH_STRICT = ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail"]
BASH_DEFAULT = BASH_STRICT
# What a systemd service (forgejo-runner's daemon) gets as PATH: systemd's default.
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEEPALIVE = b"\x04"  # written to every step's terminal each second, as the runner does
KEEPALIVE_SECONDS = 1.0
KNOWN_STEP_KEYS = {"name", "run", "uses", "with", "env", "shell", "working-directory", "id"}
KNOWN_JOB_KEYS = {"runs-on", "steps", "env", "defaults", "name", "timeout-minutes"}

Event = Literal["push", "workflow_dispatch"]


class UnsupportedWorkflow(Exception):
    """The workflow uses something this emulated runner does not know: nothing was run."""


@dataclass(frozen=True)
class RunContext:
    """What the runner is given for one job: the event and its context."""

    sha: str
    event_name: Event = "push"
    ref: str = "refs/heads/main"
    inputs: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # process environment additions
    repository: str = "GeneralBots/gb"
    server_url: str = "http://127.0.0.1"
    run_id: int = 1
    run_number: int = 1
    token: str = ""  # the job's automatic token (`forgejo.token`), masked like a secret
    actor: str = ""  # the forge user whose push or dispatch started the run (GITHUB_ACTOR)


@dataclass
class StepResult:
    name: str
    status: Literal["success", "failure", "skipped"]
    exit_code: int | None  # None when skipped
    output: str  # stdout and stderr interleaved, secrets masked
    seconds: float = 0.0
    raw_output: str = ""  # the same, unmasked: what the step itself wrote


@dataclass
class JobResult:
    job: str
    steps: list[StepResult]
    log: str
    cancelled: bool = False

    @property
    def status(self) -> Literal["success", "failure", "cancelled"]:
        """The run/job status Forgejo would report."""
        if self.cancelled:
            return "cancelled"
        ok = all(step.status != "failure" for step in self.steps)
        return "success" if ok else "failure"

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def step(self, name: str) -> StepResult:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


def load_workflow(workflow: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A workflow as a mapping, from a path, YAML text or an already-parsed mapping."""
    if isinstance(workflow, Mapping):
        return dict(workflow)
    if isinstance(workflow, Path) or "\n" not in str(workflow):
        workflow = Path(workflow).read_text()
    data = yaml.safe_load(workflow)
    if not isinstance(data, dict) or "jobs" not in data:
        raise UnsupportedWorkflow("not a workflow: no `jobs:`")
    if True in data and "on" not in data:  # YAML 1.1 reads the key `on` as true
        data["on"] = data.pop(True)
    return data


def _pattern(glob: str) -> re.Pattern[str]:
    """A workflow filter pattern as act (and so Forgejo) reads it: `*` any characters but `/`,
    `**` any characters, `?` zero or one of the preceding character, `+` one or more of it,
    `[…]` a class; the pattern matches the whole path."""
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out += ".*"
            i += 2
        elif glob[i] == "*":
            out += "[^/]*"
            i += 1
        elif glob[i] in "?+":
            out += glob[i]
            i += 1
        elif glob[i] == "[":
            end = glob.find("]", i)
            if end < 0:
                raise UnsupportedWorkflow(f"unclosed `[` in path filter {glob!r}")
            out += glob[i : end + 1]
            i = end + 1
        else:
            out += re.escape(glob[i])
            i += 1
    return re.compile(out + r"\Z")


def _matches(patterns: list[str], path: str) -> bool:
    """The last matching pattern decides; a `!` pattern excludes what it matches."""
    matched = False
    for raw in patterns:
        negated = raw.startswith("!")
        if _pattern(raw[1:] if negated else raw).match(path):
            matched = not negated
    return matched


def is_triggered(
    workflow: str | Path | Mapping[str, Any],
    event_name: Event,
    *,
    ref: str = "refs/heads/main",
    changed_paths: Iterable[str] = (),
) -> bool:
    """Whether Forgejo would start this workflow for the event: for a push, the branch and (when
    the workflow has `paths:`) one of the changed paths must match its filters."""
    triggers = load_workflow(workflow).get("on")
    if isinstance(triggers, str):
        triggers = {triggers: None}
    elif isinstance(triggers, list):
        triggers = dict.fromkeys(triggers)
    if not isinstance(triggers, dict) or event_name not in triggers:
        return False
    if event_name != "push":
        return True
    filters = triggers[event_name] or {}
    unknown = set(filters) - {"branches", "paths", "paths-ignore"}
    if unknown:
        raise UnsupportedWorkflow(f"push filter {sorted(unknown)[0]!r} is not emulated")
    branch = ref.removeprefix("refs/heads/")
    if "branches" in filters and not any(
        fnmatch.fnmatchcase(branch, b) for b in filters["branches"]
    ):
        return False
    changed = list(changed_paths)
    if "paths-ignore" in filters:
        ignored = [str(p) for p in filters["paths-ignore"]]
        if changed and all(_matches(ignored, path) for path in changed):
            return False
    if "paths" in filters:
        wanted = [str(p) for p in filters["paths"]]
        return any(_matches(wanted, path) for path in changed)
    return True


class _Expressions:
    def __init__(self, context: RunContext, workspace: Path, temp: Path) -> None:
        self.context = context
        ref = context.ref
        self.values = {
            "sha": context.sha,
            "ref": ref,
            "ref_name": ref.rsplit("/", 1)[-1] if ref.startswith("refs/") else ref,
            "event_name": context.event_name,
            "repository": context.repository,
            "workspace": str(workspace),
            "server_url": context.server_url,
            "run_id": str(context.run_id),
            "run_number": str(context.run_number),
            "actor": context.actor,
        }
        self.runner = {"temp": str(temp), "os": "Linux"}

    def evaluate(self, expression: str, env: Mapping[str, str]) -> str:
        parts = expression.split(".")
        head = parts[0]
        if len(parts) == 2 and head == "secrets":
            return self.context.secrets.get(parts[1], "")
        if len(parts) == 2 and head == "inputs":
            return self.context.inputs.get(parts[1], "")
        if len(parts) == 4 and head in CONTEXT_NAMES and parts[1:3] == ["event", "inputs"]:
            return self.context.inputs.get(parts[3], "")
        if len(parts) == 2 and head == "env":
            return env.get(parts[1], "")
        if len(parts) == 2 and head in CONTEXT_NAMES and parts[1] in self.values:
            return self.values[parts[1]]
        if len(parts) == 2 and head in CONTEXT_NAMES and parts[1] == "token":
            return self.context.token
        if len(parts) == 2 and head == "runner" and parts[1] in self.runner:
            return self.runner[parts[1]]
        raise UnsupportedWorkflow(f"the emulated runner does not know `${{{{ {expression} }}}}`")

    def substitute(self, text: str, env: Mapping[str, str]) -> str:
        return EXPRESSION.sub(lambda m: self.evaluate(m.group(1), env), text)

    def check(self, text: str) -> None:
        for match in EXPRESSION.finditer(text):
            self.evaluate(match.group(1), {})


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        for piece in {secret, *secret.splitlines()}:
            if piece.strip():
                text = text.replace(piece, "***")
    return text


def _strings(mapping: Any, where: str) -> dict[str, str]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise UnsupportedWorkflow(f"{where}: expected a mapping")
    return {
        str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in mapping.items()
    }


def _select_job(data: Mapping[str, Any], job: str | None) -> tuple[str, dict[str, Any]]:
    jobs = data["jobs"]
    if job is None:
        if len(jobs) != 1:
            raise UnsupportedWorkflow(f"the workflow has {len(jobs)} jobs: name the one to run")
        job = next(iter(jobs))
    if job not in jobs:
        raise UnsupportedWorkflow(f"no job {job!r} (jobs: {', '.join(jobs)})")
    spec = jobs[job]
    unknown = set(spec) - KNOWN_JOB_KEYS
    if unknown:
        raise UnsupportedWorkflow(f"job {job}: {sorted(unknown)[0]!r} is not emulated")
    return job, spec


def _check_checkout(
    workspace: Path, context: RunContext, step: Mapping[str, Any], path: str
) -> str:
    """The emulated actions/checkout: a JavaScript action, so a host-mode runner needs `node`
    on the job's PATH; the checkout must already be there, at the sha."""
    if shutil.which("node", path=path) is None:
        raise RuntimeError(
            f"{step.get('uses')} is a JavaScript action: the host-mode runner needs `node` on "
            f"PATH ({path})"
        )
    head = subprocess.run(
        ["git", "-C", str(workspace), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode != 0:
        raise RuntimeError(f"no git checkout at {workspace}: {head.stderr.strip()}")
    if not head.stdout.strip().startswith(context.sha):
        at = head.stdout.strip()
        raise RuntimeError(f"checkout at {workspace} is at {at}, not {context.sha}")
    lines = [f"checkout {workspace} at {head.stdout.strip()} (provided by the sandbox)"]
    with_ = step.get("with") or {}
    if with_.get("submodules") in (True, "true", "recursive"):
        status = subprocess.run(
            ["git", "-C", str(workspace), "submodule", "status", "--recursive"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        missing = [line.split()[1] for line in status.splitlines() if line.startswith("-")]
        if missing:
            raise RuntimeError(f"submodules not checked out: {', '.join(missing)}")
        lines.append(status.rstrip())
    return "\n".join(lines) + "\n"


def _run_script(
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    deadline: float | None,
    emit: Callable[[str], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> tuple[int, str, bool]:
    """Run the step's script on a fresh PTY (raw mode, its controlling terminal, a new session
    and process group), writing `\x04` to it every second; stream its lines to `emit`. A step
    past `deadline`, or whose job is `cancelled`, is killed (its process group).
    Returns (exit code, output, killed)."""
    master, terminal = pty.openpty()
    tty.setraw(terminal)
    # util-linux setsid: a new session (and process group) whose controlling terminal is the PTY
    # on its stdin; it execs the script without forking, so the pid is the step's.
    setsid = shutil.which("setsid") or "/usr/bin/setsid"
    try:
        process = subprocess.Popen(
            [setsid, "--ctty", *argv],
            cwd=cwd,
            env=dict(env),
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
        )
    finally:
        os.close(terminal)
    # A step that never reads its terminal fills the input buffer in about an hour of ^Ds: then
    # a keep-alive is dropped rather than block the runner.
    os.set_blocking(master, False)
    chunks: list[str] = []
    pending = b""
    timed_out = False
    next_keepalive = time.monotonic() + KEEPALIVE_SECONDS
    with selectors.DefaultSelector() as selector:
        selector.register(master, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if now >= next_keepalive:
                with contextlib.suppress(OSError):
                    os.write(master, KEEPALIVE)
                next_keepalive = now + KEEPALIVE_SECONDS
            wait = min(0.2, max(0.0, next_keepalive - now))
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            if (deadline is not None and now >= deadline) or cancelled():
                timed_out = True
                break
            if not selector.select(wait):
                # The script has exited but something it started still holds the terminal: the
                # step is over, as on the real runner, which waits for the process only.
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                continue
            except OSError:  # EIO: every holder of the terminal has closed it
                data = b""
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace").removesuffix("\r") + "\n"
                chunks.append(text)
                emit(text)
    if timed_out:
        os.killpg(process.pid, signal.SIGKILL)  # the group we started, nothing else
    if pending:
        text = pending.decode(errors="replace") + "\n"
        chunks.append(text)
        emit(text)
    os.close(master)
    code = process.wait()
    return code, "".join(chunks), timed_out


def run_job(
    workflow: str | Path | Mapping[str, Any],
    checkout: str | Path,
    context: RunContext,
    *,
    job: str | None = None,
    timeout: float | None = None,
    on_output: Callable[[str], None] | None = None,
    temp_dir: str | Path | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> JobResult:
    """Run one job of `workflow` in `checkout` (the workspace) for the event in `context`.

    `on_output` receives the log as it is written (masked), for a live job log. `timeout` bounds
    the whole job: a step still running then is killed (its process group) and fails. When
    `cancelled()` turns true (Forgejo cancelled the run, e.g. a newer push superseded it), the
    running step is killed and the rest are skipped, as forgejo-runner does. HOME is a fresh
    directory under the job's temp dir unless `context.env` sets it.
    """
    data = load_workflow(workflow)
    job_name, spec = _select_job(data, job)
    workspace = Path(checkout).resolve()
    steps = spec.get("steps") or []
    defaults = ((spec.get("defaults") or data.get("defaults") or {}).get("run")) or {}
    secrets = [v for v in (*context.secrets.values(), context.token) if v]

    with tempfile.TemporaryDirectory(prefix="gbdeploy-runner-", dir=temp_dir) as temp_name:
        temp = Path(temp_name)
        expressions = _Expressions(context, workspace, temp)
        # Check everything first: an unknown expression or key fails before any step runs.
        for index, step in enumerate(steps, 1):
            unknown = set(step) - KNOWN_STEP_KEYS
            if unknown:
                raise UnsupportedWorkflow(f"step {index}: {sorted(unknown)[0]!r} is not emulated")
            uses = step.get("uses")
            if uses is not None and not str(uses).startswith("actions/checkout@"):
                raise UnsupportedWorkflow(f"step {index}: `uses: {uses}` is not emulated")
            if (uses is None) == ("run" not in step):
                raise UnsupportedWorkflow(f"step {index}: needs exactly one of `run` and `uses`")
            shell = step.get("shell", defaults.get("shell"))
            if shell not in (None, "bash"):
                raise UnsupportedWorkflow(f"step {index}: shell {shell!r} is not emulated")
            for text in (str(step.get("run", "")), *_strings(step.get("env"), "env").values()):
                expressions.check(text)
        for scope in (data.get("env"), spec.get("env")):
            for value in _strings(scope, "env").values():
                expressions.check(value)

        home = temp / "home"
        home.mkdir()
        (temp / "tmp").mkdir()
        base = {
            "PATH": DAEMON_PATH,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(home),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "FORGEJO_ACTIONS": "true",
            "RUNNER_OS": "Linux",
            "RUNNER_TEMP": str(temp / "tmp"),
        }
        for name, value in expressions.values.items():
            base[f"GITHUB_{name.upper()}"] = value
            base[f"FORGEJO_{name.upper()}"] = value
        base.update(context.env)
        job_env: dict[str, str] = {}
        for scope in (data.get("env"), spec.get("env")):
            for key, value in _strings(scope, "env").items():
                job_env[key] = expressions.substitute(value, {**job_env})

        log: list[str] = []
        raw: list[str] = []

        def emit(text: str) -> None:
            raw.append(text)
            masked = _mask(text, secrets)
            log.append(masked)
            if on_output is not None:
                on_output(masked)

        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[StepResult] = []
        failed = False
        for index, step in enumerate(steps, 1):
            name = str(step.get("name") or step.get("uses") or step["run"].splitlines()[0])
            if failed or cancelled():
                results.append(StepResult(name, "skipped", None, ""))
                emit(f"==> step {index}/{len(steps)}: {name}: skipped\n")
                continue
            emit(f"==> step {index}/{len(steps)}: {name}\n")
            step_log_start = len(log)
            step_raw_start = len(raw)
            step_started = time.monotonic()
            if "uses" in step:
                try:
                    emit(_check_checkout(workspace, context, step, base["PATH"]))
                    code = 0
                except RuntimeError as error:
                    emit(f"error: {error}\n")
                    code = 1
            else:
                env = {**job_env}
                for key, value in _strings(step.get("env"), "env").items():
                    env[key] = expressions.substitute(value, env)
                script = temp / f"step-{index}.sh"
                script.write_text(expressions.substitute(str(step["run"]), env))
                shell = step.get("shell", defaults.get("shell"))
                argv = [*(BASH_STRICT if shell == "bash" else BASH_DEFAULT), str(script)]
                directory = step.get("working-directory", defaults.get("working-directory"))
                cwd = workspace
                if directory:
                    cwd = workspace / expressions.substitute(str(directory), env)
                if not cwd.is_dir():
                    emit(f"error: working-directory {cwd} does not exist\n")
                    code = 1
                else:
                    code, _, killed = _run_script(
                        argv, cwd, {**base, **env}, deadline, emit, cancelled
                    )
                    if killed and cancelled():
                        emit("the run was cancelled; step killed\n")
                        code = code if code != 0 else 1
                    elif killed:
                        emit(f"error: the job timed out after {timeout}s; step killed\n")
                        code = code if code != 0 else 1
                script.unlink()
            output = "".join(log[step_log_start:])
            raw_output = "".join(raw[step_raw_start:])
            status: Literal["success", "failure"] = "success" if code == 0 else "failure"
            seconds = time.monotonic() - step_started
            emit(f"==> {name}: {status} (exit code {code}, {seconds:.1f}s)\n")
            results.append(StepResult(name, status, code, output, seconds, raw_output))
            failed = code != 0
        result = JobResult(job_name, results, "", cancelled=cancelled())
        emit(f"==> job {job_name}: {result.status}\n")
        result.log = "".join(log)
        return result
