"""The sandbox behind `gbdeploy demo`: a whole General Bots release, on this machine only.

    <dir>/sshd/             a real OpenSSH server on 127.0.0.1, alias `pragmatismo-system`
    <dir>/git/              bare `origin` and `alm` remotes, the developer's clone of `gb`
    <dir>/target/opt/gbo/   the "production" binary, its log, lock and deploy log
    <dir>/runner/           the emulated runner's HOME (~/.ssh/config names the target) and
                            one checkout per CI run

With `container`, botserver runs in the container `system` behind that ssh host, entered as
production enters it (`sudo -n incus exec system -- …`) through the stand-in `sudo` and `incus`
on the host's PATH (<dir>/host/bin).

Two placements of the workflow (`workflow_repo`): `root` puts the rendered workflow in `gb`, and
the pointer push starts the run; `component` puts it (with a copy of gbdeploy.yaml, which its
deploy step reads) in the botserver repository, and the submodule push starts the run there.
Post-receive hooks on `alm/gb.git` and `alm/botserver.git` tell the Forgejo emulator about each
push, as Forgejo would; its runner (registered with the label `gbo`) clones the pushed commit of
that repository (the root's private submodules only when the job token may read them) and runs
the `run:` steps of the workflow (so the real `gbdeploy deploy` runs over ssh, with the key and
known_hosts handed over as secrets); the stand-in service answers its health URL with its
commit. Nothing here reaches beyond 127.0.0.1 and the sandbox directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from gbdeploy.config import Settings
from gbdeploy.config_layers import load_settings
from gbdeploy.errors import UsageError
from gbdeploy.output import Reporter
from gbdeploy.remote.connection import quote

from . import runner as emulated_runner
from .forgejo import ExecutorContext, ForgejoEmulator
from .gitworld import GitWorld, git
from .procs import stop_running
from .service import compiler, service_user
from .sshd import LoopbackSshd, find_sshd, free_port
from .standins import StandinWorld

COMPONENT = "botserver"
CONTAINER = "system"
OWNER = "GeneralBots"
RUNNER_LABEL = "gbo"
PLACEMENTS = ("root", "component")
BUILD_SCRIPT = """#!/bin/sh
# The sandbox's stand-in for `cargo build`: the commit is baked in as botserver does it.
set -eu
mkdir -p target/debug
cc -O2 -DGB_COMMIT="\\"${BOTSERVER_COMMIT:?}\\"" -DGB_SERVICE='"botserver"' \\
   -o target/debug/botserver service.c
"""


@dataclass
class Sandbox:
    directory: Path
    token: str
    sshd: LoopbackSshd
    git: GitWorld
    forge: ForgejoEmulator
    port: int
    jobs: dict[int, emulated_runner.JobResult] = field(default_factory=dict)
    placement: str = "root"
    container: str | None = None  # botserver's container behind the ssh host, if any

    @property
    def workflow_repo(self) -> str:
        """The repository the workflow runs in, OWNER/NAME."""
        return f"{OWNER}/{'gb' if self.placement == 'root' else COMPONENT}"

    def bare_of(self, full_name: str) -> Path:
        return self.git.bare("alm", full_name.split("/")[1].lower())

    @property
    def binary(self) -> Path:
        return self.directory / "target" / "opt" / "gbo" / "bin" / COMPONENT

    @property
    def log(self) -> Path:
        return self.directory / "target" / "opt" / "gbo" / "logs" / "error.log"

    @property
    def runner_home(self) -> Path:
        return self.directory / "runner" / "home"

    @property
    def environment(self) -> dict[str, str]:
        """What a shell needs to use the sandbox by hand (and what `demo` runs with)."""
        return {
            "GBDEPLOY_FORGE_TOKEN": self.token,
            "GBDEPLOY_SSH_CONFIG": str(self.sshd.ssh_config),
        }

    def settings(self) -> Settings:
        with _environment(self.environment):
            return load_settings(start=self.git.root)

    # --- the emulated runner -------------------------------------------------------------

    def execute_run(self, run: ExecutorContext) -> str:
        """What a host-mode runner does for one run: check out the commit into a fresh random
        directory, run the job, remove the directory."""
        work = self.directory / "runner" / "work"
        work.mkdir(parents=True, exist_ok=True)
        checkout = Path(tempfile.mkdtemp(prefix="hostexecutor-", dir=work))
        try:
            return self._run_in(run, checkout)
        finally:
            shutil.rmtree(checkout, ignore_errors=True)

    def _run_in(self, run: ExecutorContext, checkout: Path) -> str:
        bare = self.bare_of(run.repository)
        run.log(f"checkout {run.commit_sha} of {run.repository} into {checkout}\n")
        try:
            _checkout(bare, run.commit_sha, checkout, may_read=self._job_token_reach(run))
        except RuntimeError as error:
            run.log(f"checkout failed: {error}\n")
            return "failure"
        workflow = checkout / ".forgejo" / "workflows" / run.workflow
        context = emulated_runner.RunContext(
            sha=run.commit_sha,
            event_name="workflow_dispatch" if run.event == "workflow_dispatch" else "push",
            ref=run.ref,
            inputs=run.inputs,
            secrets={
                "DEPLOY_SSH_KEY": self.sshd.client_key.read_text(),
                "DEPLOY_KNOWN_HOSTS": self.sshd.known_hosts.read_text(),
            },
            env=self._runner_environment(),
            repository=run.repository,
            server_url=self.forge.url,
            run_id=run.run_id,
            run_number=run.run_number,
            actor=run.repository.split("/", 1)[0],  # the emulator's trigger_user
        )
        try:
            result = emulated_runner.run_job(
                workflow,
                checkout,
                context,
                on_output=run.log,
                timeout=600,
                cancelled=lambda: run.cancelled,
            )
        except emulated_runner.UnsupportedWorkflow as error:
            run.log(f"the emulated runner cannot run {run.workflow}: {error}\n")
            return "failure"
        self.jobs[run.run_id] = result
        return result.status

    def _job_token_reach(self, run: ExecutorContext) -> Callable[[str], bool]:
        """Which submodule URLs the run's automatic token may clone: its own repository and
        public ones (a private sibling answers 403 to it)."""

        def may_read(url: str) -> bool:
            name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
            return self.forge.job_token_may_read(run.run_id, f"{OWNER}/{name}")

        return may_read

    def triggered_workflows(self, before: str, sha: str, ref: str, *, repo: str = "") -> list[str]:
        """The workflows of commit `sha` that a push from `before` starts (their `paths:`)."""
        full_name = repo or f"{OWNER}/gb"
        bare = self.bare_of(full_name)
        try:
            names = git(bare, "ls-tree", "--name-only", f"{sha}:.forgejo/workflows").split()
        except RuntimeError:
            return []  # no workflows in this repository
        if before and set(before) != {"0"}:
            changed = git(bare, "diff-tree", "--name-only", "-r", before, sha).split()
        else:
            changed = git(bare, "ls-tree", "-r", "--name-only", sha).split()
        known = self.forge.repository(full_name).workflows
        started = []
        for name in names:
            text = git(bare, "show", f"{sha}:.forgejo/workflows/{name}")
            if name not in known:
                continue
            self.forge.set_workflow(name, text, repo=full_name)
            if emulated_runner.is_triggered(text, "push", ref=ref, changed_paths=changed):
                started.append(name)
        return started

    def _runner_environment(self) -> dict[str, str]:
        # The daemon's PATH (the emulated runner's default) and no gbdeploy on it: the job
        # installs gbdeploy from the wheel and lock committed beside the workflow.
        return {
            "HOME": str(self.runner_home),
            "GBDEPLOY_SSH_CONFIG": str(self.runner_home / ".ssh" / "config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }

    # --- lifecycle -------------------------------------------------------------------------

    def stop_service(self) -> None:
        """Stop the stand-in service by its exact executable path (never by name)."""
        stop_running(self.binary)

    def close(self, *, remove: bool = True) -> None:
        self.stop_service()
        self.forge.stop()
        self.sshd.stop()
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)


def create(
    directory: Path | None = None,
    *,
    placement: str = "root",
    forge_version: str = "16.0.0",
    container: bool = False,
) -> Sandbox:
    """Build and start a sandbox; the first version of botserver is deployed and running.
    `placement`: where botserver's workflow lives, `root` (gb) or `component` (botserver);
    `forge_version`: the Forgejo version the emulator answers as (and behaves like);
    `container`: botserver's target is a container behind the ssh host (sudo + incus)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    find_sshd()  # no sshd: a message that says how to install it, before anything is made
    compiler()
    _find_node()
    directory = Path(directory or tempfile.mkdtemp(prefix="gbdeploy-sandbox-"))
    directory.chmod(0o755)  # the service user must reach its binary
    token = secrets.token_hex(20)
    try:
        path = [_container_host(directory / "host").bin] if container else []
        sshd = LoopbackSshd(directory / "sshd", alias="pragmatismo-system", extra_path=path)
        sshd.start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    root_workflows = [f"{COMPONENT}.yaml"] if placement == "root" else []
    forge = ForgejoEmulator(
        token=token,
        owner=OWNER,
        workflows=root_workflows,
        runner_labels=[RUNNER_LABEL],
        version=forge_version,
    )
    component_workflows = [f"{COMPONENT}.yaml"] if placement == "component" else []
    forge.add_repository(OWNER, COMPONENT, workflows=component_workflows, private=False)
    sandbox = Sandbox(
        directory,
        token,
        sshd,
        GitWorld(directory / "git"),
        forge,
        free_port(),
        {},
        placement,
        CONTAINER if container else None,
    )
    try:
        _build_world(sandbox)
        forge.executor = sandbox.execute_run
        forge.push_workflows = sandbox.triggered_workflows
        forge.push_workflows_of[f"{OWNER}/{COMPONENT}".lower()] = lambda before, sha, ref: (
            sandbox.triggered_workflows(before, sha, ref, repo=f"{OWNER}/{COMPONENT}")
        )
        forge.start()
        _write_config(sandbox)
        _install_push_hook(sandbox)
        _first_deploy(sandbox)
    except BaseException:
        sandbox.close()
        raise
    return sandbox


def _container_host(directory: Path) -> StandinWorld:
    """The ssh host's container tooling: `sudo` (the ssh user may use it without a password, as
    root may) and `incus`, holding the container CONTAINER."""
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    world = StandinWorld(directory).install()
    world.install_program("incus", "incus")
    world.install_program("sudo", "sudo")
    world.add_container(CONTAINER)
    return world


def _find_node() -> str:
    """The emulated runner is host-mode: `actions/checkout` is a JavaScript action run by node."""
    found = shutil.which("node") or shutil.which("nodejs")
    if not found:
        raise UsageError(
            "no node on this machine: the sandbox's host-mode runner runs actions/checkout with it",
            hint="apt-get update && apt-get install -y nodejs",
        )
    return found


def _build_world(sandbox: Sandbox) -> None:
    source = resources.files("gbdeploy_sandbox").joinpath("standin/service.c").read_text()
    sandbox.git = GitWorld.build(
        sandbox.directory / "git",
        submodule_files={"service.c": source, "build.sh": BUILD_SCRIPT, "VERSION": "1\n"},
    )
    home = sandbox.runner_home / ".ssh"
    home.mkdir(parents=True)
    # The runner's ssh config names the target but holds no key: the job brings the key and
    # known_hosts from its secrets, as in production.
    (home / "config").write_text(
        f"Host {sandbox.sshd.alias}\n    HostName 127.0.0.1\n    Port {sandbox.sshd.port}\n"
        f"    User {sandbox.sshd.user}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {home / 'known_hosts'}\n"
    )


def _write_config(sandbox: Sandbox) -> None:
    user = service_user()
    config = {
        "forge": {"url": sandbox.forge.url, "owner": OWNER, "repo": "gb", "timeout": 10},
        "release": {
            "timeout": 600,
            "appear_timeout": 30,
            "verify_timeout": 60,
            "poll_interval": 0.5,
        },
        "targets": {"system": _target(sandbox)},
        # The runner's persistent disk (build caches, build logs) inside the sandbox, not /opt.
        "workflows": {
            "runs_on": RUNNER_LABEL,
            "cargo_target_dir": str(sandbox.directory / "runner" / "ci" / "{component}" / "target"),
            "source_dir": str(sandbox.directory / "runner" / "ci" / "{component}" / "src"),
            "sccache_dir": str(sandbox.directory / "runner" / "cache" / "sccache"),
            "cargo_home": str(sandbox.directory / "runner" / "cache" / "cargo"),
            "logs_dir": str(sandbox.directory / "runner" / "logs"),
        },
        "components": {
            COMPONENT: {
                "workflow_repo": sandbox.placement,
                "binary": str(sandbox.binary),
                "artifact": "target/debug/botserver",
                "build": "sh build.sh",
                "siblings": [],  # the sandbox's botserver stand-in builds alone
                "user": user,
                "start": "./botserver --noconsole",
                "run_as": "runuser -u {user} --",
                "log": str(sandbox.log),
                "restart": "process",
                "health": f"http://127.0.0.1:{sandbox.port}/health",
                "env": {"PORT": str(sandbox.port)},
                "health_timeout": 30,
            },
            "botui": {"enabled": False},
        },
    }
    root = sandbox.git.root
    text = "# The demo sandbox's configuration (made by `gbdeploy demo`).\n" + yaml.safe_dump(
        config, sort_keys=False
    )
    (root / "gbdeploy.yaml").write_text(text)
    if sandbox.placement == "component":
        _commit_component_workflow(sandbox, text)
        paths = ["gbdeploy.yaml", COMPONENT]
    else:
        from gbdeploy.workflows import rendered_files

        _write_install_files(root)
        out = root / ".forgejo" / "workflows"
        out.mkdir(parents=True, exist_ok=True)
        for name, rendered in rendered_files(sandbox.settings()).items():
            if name == f"{COMPONENT}.yaml":
                (out / name).write_text(rendered)
                sandbox.forge.set_workflow(name, rendered)
        paths = ["gbdeploy.yaml", ".forgejo"]
    git(root, "add", *paths)
    git(root, "commit", "--quiet", "-m", "gbdeploy: configuration and workflow")
    for remote in ("origin", "alm"):
        git(root, "push", "--quiet", remote, sandbox.git.branch)
    sandbox.binary.parent.mkdir(parents=True, exist_ok=True)
    sandbox.log.parent.mkdir(parents=True, exist_ok=True)
    for path in (sandbox.binary.parent, sandbox.log.parent):
        shutil.chown(path, user, user)


def _target(sandbox: Sandbox) -> dict[str, object]:
    if sandbox.container is None:
        return {"ssh": sandbox.sshd.alias}
    return {"ssh": sandbox.sshd.alias, "container": sandbox.container, "via": "incus", "sudo": True}


def _commit_component_workflow(sandbox: Sandbox, config_text: str) -> None:
    """The component placement: the workflow and gbdeploy.yaml live in botserver's repository."""
    world = sandbox.git
    world.switch_submodule_to_branch()
    out = world.submodule / ".forgejo" / "workflows"
    out.mkdir(parents=True, exist_ok=True)
    from gbdeploy.workflows import component_files

    workflow = component_files(sandbox.settings())[world.submodule_name][f"{COMPONENT}.yaml"]
    (out / f"{COMPONENT}.yaml").write_text(workflow)
    _write_install_files(world.submodule)
    (world.submodule / "gbdeploy.yaml").write_text(config_text)
    sandbox.forge.set_workflow(f"{COMPONENT}.yaml", workflow, repo=f"{OWNER}/{COMPONENT}")
    git(world.submodule, "add", ".forgejo", "gbdeploy.yaml")
    git(world.submodule, "commit", "--quiet", "-m", "gbdeploy: workflow and configuration")
    for remote in ("origin", "alm"):
        git(world.submodule, "push", "--quiet", remote, world.branch)


def _write_install_files(top: Path) -> None:
    """The wheel of this gbdeploy and its hash lock, which the job's install step reads."""
    from gbdeploy.install_lock import install_files

    for relative, data in install_files(with_wheel=True).items():
        (top / relative).parent.mkdir(parents=True, exist_ok=True)
        (top / relative).write_bytes(data)


def _install_push_hook(sandbox: Sandbox) -> None:
    for repo in ("gb", COMPONENT):
        _install_hook(sandbox, repo)


def _install_hook(sandbox: Sandbox, repo: str) -> None:
    hook = sandbox.git.bare("alm", repo) / "hooks" / "post-receive"
    hook.write_text(
        f"""#!{sys.executable}
# Forgejo starts the Actions runs of a push; here, the emulator is told.
import json, subprocess, sys, urllib.request
for line in sys.stdin:
    old, new, ref = line.split()
    if set(new) == {{"0"}}:
        continue
    message = subprocess.run(["git", "log", "-1", "--format=%B", new],
                             capture_output=True, text=True).stdout
    body = json.dumps({{"before": old, "sha": new, "ref": ref, "message": message,
                       "repo": {f"{OWNER}/{repo}"!r}}}).encode()
    request = urllib.request.Request({sandbox.forge.url + "/_emulator/push"!r}, data=body,
                                     headers={{"Content-Type": "application/json"}})
    urllib.request.urlopen(request, timeout=10).read()
"""
    )
    hook.chmod(0o755)


def _first_deploy(sandbox: Sandbox) -> None:
    """The version in production before the demo's release: built and deployed as CI would."""
    from gbdeploy.deploy import run_deploy

    from .service import build_service

    commit = git(sandbox.git.submodule, "rev-parse", "--short", "HEAD")
    artifact = build_service(sandbox.directory / "runner" / "first" / COMPONENT, commit)
    with open(os.devnull, "w") as nowhere, _environment(sandbox.environment):
        run_deploy(
            sandbox.settings(),
            COMPONENT,
            Reporter(stream=nowhere),
            artifact=str(artifact),
            strategy="staged",
            commit=commit,
        )


def _checkout(
    bare: Path, sha: str, into: Path, *, may_read: Callable[[str], bool] = lambda url: True
) -> None:
    into.parent.mkdir(parents=True, exist_ok=True)
    git(into.parent, "-c", "protocol.file.allow=always", "clone", "--quiet", str(bare), into.name)
    git(into, "checkout", "--quiet", "--detach", sha)
    if not (into / ".gitmodules").exists():
        return
    urls = git(into, "config", "--file", ".gitmodules", "--get-regexp", r"\.url$").splitlines()
    for line in urls:
        url = line.split(" ", 1)[1]
        if not may_read(url):
            raise RuntimeError(
                f"submodule {url}: the job token may not read a private repository (HTTP 403); "
                "give actions/checkout a token that can"
            )
    git(
        into,
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "update",
        "--init",
        "--recursive",
        "--quiet",
    )


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_demo(
    reporter: Reporter, *, keep: bool = False, placement: str = "root", container: bool = False
) -> None:
    from gbdeploy.release import run_release

    reporter.say(
        "gbdeploy demo: a real release of botserver against a sandbox on this machine "
        f"(workflow in the {'root' if placement == 'root' else 'botserver'} repository"
        + (
            f"; botserver in the container {CONTAINER}, entered with sudo incus)"
            if container
            else ")"
        )
    )
    with reporter.step("build the sandbox"):
        sandbox = create(placement=placement, container=container)
    kept = False
    try:
        for line in _describe(sandbox):
            reporter.say(line)
        world = sandbox.git
        with reporter.step("developer: commit a change in botserver") as step:
            world.switch_submodule_to_branch()
            commit = world.commit_in_submodule("Say hello from the demo", filename="VERSION")
            step.detail = commit[:10]
        reporter.say(f"$ cd {world.root} && gbdeploy release {COMPONENT}")
        try:
            with _environment(sandbox.environment), _cwd(world.root):
                run_release(sandbox.settings(), COMPONENT, reporter)
        finally:
            reporter.summary()
            for run_id, job in sandbox.jobs.items():
                reporter.say(f"CI run {run_id}, job {job.job} (on the emulated runner):")
                for ci_step in job.steps:
                    line = f"{ci_step.status:<8} {ci_step.name:<40} {ci_step.seconds:7.1f}s"
                    reporter.say(f"  {line}")
        reporter.say(f"released and verified: botserver {commit[:7]} is live on the sandbox target")
        if keep:
            kept = True
            _keep_up(sandbox, reporter)
    finally:
        if not kept:
            sandbox.close()


def _describe(sandbox: Sandbox) -> list[str]:
    return [
        f"  sshd        127.0.0.1:{sandbox.sshd.port} (alias {sandbox.sshd.alias}, own host key)",
        f"  forgejo     {sandbox.forge.url} (emulator; its runner, label {RUNNER_LABEL}, runs "
        f"the workflow of {sandbox.workflow_repo})",
        f"  git         {sandbox.git.root} (remotes origin, alm)",
        f"  botserver   {sandbox.binary}, health http://127.0.0.1:{sandbox.port}/health"
        + (
            f", in container {sandbox.container} (sudo incus exec {sandbox.container} -- …)"
            if sandbox.container
            else ""
        ),
    ]


def _keep_up(sandbox: Sandbox, reporter: Reporter) -> None:
    """Print how to use the sandbox by hand, wait for Ctrl-C or SIGTERM, then clean up. Both
    are handled here, whatever was inherited: a shell's background job (`&` without job
    control) starts with SIGINT ignored, and the sandbox must still end on Ctrl-C."""
    previous = {
        sig: signal.signal(sig, signal.default_int_handler)
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        token_file = sandbox.directory / "token"
        token_file.write_text(sandbox.token + "\n")
        token_file.chmod(0o600)
        gbdeploy = Path(sys.executable).parent / "gbdeploy"
        ssh_config = quote(str(sandbox.sshd.ssh_config))
        reporter.say("")
        reporter.say("to use the sandbox by hand, in another shell:")
        reporter.say(f"  cd {sandbox.git.root}")
        reporter.say(
            f"  export GBDEPLOY_SSH_CONFIG={ssh_config} "
            f'GBDEPLOY_FORGE_TOKEN="$(cat {quote(str(token_file))})"'
        )
        reporter.say(f"  {gbdeploy} status {COMPONENT}")
        reporter.say(
            f"  git -C {COMPONENT} commit --allow-empty -m test && {gbdeploy} release {COMPONENT}"
        )
        reporter.say(f"  ssh -F {ssh_config} {sandbox.sshd.alias}")
        reporter.say("the sandbox stays up until you press Ctrl-C")
        while True:
            signal.pause()
    except KeyboardInterrupt:
        reporter.say("stopping the sandbox")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sandbox.close()


@contextlib.contextmanager
def _cwd(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
