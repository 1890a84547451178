"""The code that runs on a target, as files (`gbdeploy/remote/far_end/`) and as the scripts Python
builds around them: each one passes Debian's shellcheck (POSIX sh) and `dash -n`."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import tokenize
from datetime import datetime, timezone
from importlib.resources import files
from types import SimpleNamespace

import pytest

from gbdeploy import freeze, logs, service_control
from gbdeploy.config import Restart
from gbdeploy.deploy import layout
from gbdeploy.deploy.service import service_of
from gbdeploy.deploy.state import inspect_command
from gbdeploy.remote import far_end, probes, session, transfer
from gbdeploy.remote.connection import quote
from gbdeploy_sandbox.settings import standin_component

HOSTILE = "/srv/bot server's $(id) `x`/botserver"  # every value must stay quoted

# Checks that do not apply to a script built of a shared prelude and fragments: SC2034, a prelude
# variable this script does not use; SC3013, `-ef` (every target's sh has it: dash, bash, busybox);
# SC2016, `$` inside single quotes, and SC2089/SC2090, quotes inside a variable's value: every
# value is quoted on purpose, and the quotes and `$(id)` of a hostile path are its text.
GENERATED_EXCLUDES = "SC2034,SC3013,SC2016,SC2089,SC2090"


def shellcheck(text: str, *, exclude: str = "") -> str:
    command = ["shellcheck", "--shell=sh", "--severity=style", "-"]
    if exclude:
        command[1:1] = ["--exclude", exclude]
    checked = subprocess.run(command, input=text, text=True, capture_output=True)
    return checked.stdout + checked.stderr if checked.returncode else ""


def dash_n(text: str) -> str:
    checked = subprocess.run(["dash", "-n"], input=text, text=True, capture_output=True)
    return checked.stderr if checked.returncode else ""


FAR_END = files("gbdeploy.remote.far_end")
LIBRARY = ("procs.sh", "lib.sh", "steps.sh")  # far_end.library(), in its order


@pytest.mark.slow  # shellcheck
@pytest.mark.parametrize(
    "name", ["lib.sh", "procs.sh", "steps.sh", "probes.sh", "logs.sh", "proxy.sh", "doctor.sh"]
)
def test_each_far_end_file_is_clean_posix_sh(name):
    text = FAR_END.joinpath(name).read_text()
    assert shellcheck(text) == ""
    assert dash_n(text) == ""


def scripts(mode: str) -> dict[str, str]:
    component = standin_component(HOSTILE, HOSTILE + ".log", "gbuser", 8080)
    if mode == "systemd":
        component = dataclasses.replace(component, restart=Restart("systemd", "bot.service"))
    paths = layout.Paths(component.binary)
    holder = json.dumps({"token": "t0k"})
    preflight = layout.preflight_lines(component, "root", upload_kib=10)
    service = dict(sha256="a" * 64, token="t0k", name="restart")
    built = {
        "begin": layout.begin_command(paths, holder=holder, journal="{}", preflight=preflight),
        "begin-stealing": layout.begin_command(
            paths, holder=holder, journal="{}", preflight=preflight, steal="old"
        ),
        "steal": layout.steal_command(paths, layout.HOLDERLESS, force=True),
        "service": layout.service_command(paths, component, "root", **service),
        "service-stop": layout.service_command(paths, component, "root", **service, start=False),
        "service-start": layout.service_command(
            paths, component, "root", **service, stop=False, source=HOSTILE + ".releases/x"
        ),
        "restore": layout.restore_command(
            paths, component, "root", token="t0k", names=["a", "b"], wait_seconds=2
        ),
        "state": layout.state_command(paths, component, "curl -s http://localhost:8080/"),
        "healthy": layout.healthy_command(paths, "t0k"),
        "finish": layout.finish_command(
            paths,
            token="t0k",
            log_entry={"action": "deploy"},
            started_epoch=1,
            keep_release=("b" * 64, "abc1234", 3),
        ),
        "freeze-status": freeze.status_command(paths),
        "freeze": freeze.acquire_command(paths, json.dumps({"by": "me"}), "t0k"),
        "unfreeze": freeze.release_command(paths),
        "inspect": inspect_command(paths),
        "finish-restore-failed": layout.finish_command(
            paths, token="t0k", log_entry={}, started_epoch=1, phase="failed-restore-failed"
        ),
        "recipe": service_of(component).recipe("gbops"),
    }
    run = SimpleNamespace(component=component, paths=paths, ssh_user="gbops")
    for action in service_control.ACTIONS:
        built[action] = service_control.service_script(run, action)  # type: ignore[arg-type]
    return built


@pytest.mark.slow  # shellcheck
def test_every_probe_is_clean_posix_sh():
    annotated = FAR_END.joinpath("procs.sh").read_text() + FAR_END.joinpath("probes.sh").read_text()
    path = HOSTILE
    for probe in (
        probes.probe_processes(path),
        probes.probe_stat(path),
        probes.probe_sha256(path),
        probes.probe_contains(path, "it's $HOME"),
        probes.probe_last_line(path),
        probes.probe_tail(path, from_byte=10),
        probes.probe_health("http://localhost:8080/health?x=1"),
        probes.probe_health("https://localhost/health"),
    ):
        checked = probe.command.replace(far_end.processes(), "").replace(far_end.probes(), "")
        assert shellcheck(annotated + checked, exclude=GENERATED_EXCLUDES) == "", probe.name
        assert dash_n(probe.command) == "", probe.name


@pytest.mark.slow  # shellcheck
def test_every_logs_script_is_clean_posix_sh():
    annotated = FAR_END.joinpath("logs.sh").read_text()
    file_log = standin_component(HOSTILE, HOSTILE + ".log", "gbuser", 8080)
    journal = dataclasses.replace(file_log, log=None, restart=Restart("systemd", "bot.service"))
    since = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
    for component in (file_log, journal):
        for options in (
            {},
            {"follow": True},
            {"grep": "it's $(id)"},
            {"grep": "x|y", "follow": True},
            {"since": since, "grep": "x"},
        ):
            text = logs.tail_command(component, 7, **options)
            checked = text.replace(far_end.logs(), annotated)
            # SC2317: a function this one call line leaves unused reads as unreachable
            assert shellcheck(checked, exclude=GENERATED_EXCLUDES + ",SC2317") == "", options
            assert dash_n(text) == "", options


@pytest.mark.slow  # shellcheck
@pytest.mark.parametrize("mode", ["process", "systemd"])
def test_every_script_the_deploy_sends_is_clean_posix_sh(mode):
    # The library is sent without its comments; checked with them, its directives apply.
    annotated = "".join(FAR_END.joinpath(name).read_text() for name in LIBRARY)
    for name, text in scripts(mode).items():
        library = far_end.library(steps=name != "state")
        assert library in text or name == "recipe", name
        checked = text.replace(library, annotated)
        assert shellcheck(checked, exclude=GENERATED_EXCLUDES) == "", name
        assert dash_n(text) == "", name


# --- the Python helper: what the oldest target runs
OLDEST_PYTHON = "3.4"
# Syntax newer than 3.4, by the node that carries it (the grammar is parsed by this Python).
NEWER_SYNTAX = {
    ast.JoinedStr: "f-string (3.6)",
    ast.AnnAssign: "variable annotation (3.6)",
    ast.AsyncFunctionDef: "async def (3.5)",
    ast.Await: "await (3.5)",
    ast.AsyncFor: "async for (3.5)",
    ast.AsyncWith: "async with (3.5)",
    ast.MatMult: "@ operator (3.5)",
    ast.NamedExpr: "walrus (3.8)",
    ast.Match: "match (3.10)",
}


def newer_syntax(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        for kind, what in NEWER_SYNTAX.items():
            if isinstance(node, kind):
                found.append(f"line {getattr(node, 'lineno', '?')}: {what}")
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            arguments = node.args
            if arguments.posonlyargs:
                found.append(f"line {getattr(node, 'lineno', '?')}: positional-only (3.8)")
            if isinstance(node, ast.FunctionDef) and (
                node.returns or any(a.annotation for a in [*arguments.args, *arguments.kwonlyargs])
            ):
                found.append(f"line {node.lineno}: annotation (3.0, but kept out)")
        if isinstance(node, ast.Call) and sum(isinstance(a, ast.Starred) for a in node.args) > 1:
            found.append(f"line {node.lineno}: several * in one call (3.5)")
        if isinstance(node, ast.Dict) and None in node.keys:
            found.append(f"line {node.lineno}: ** in a dict display (3.5)")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NUMBER and "_" in token.string:
            found.append(f"line {token.start[0]}: _ in a number (3.6)")
    return found


def test_the_helper_is_python_the_oldest_target_runs():
    source = FAR_END.joinpath("helper.py").read_text()
    compile(source, "helper.py", "exec")
    assert newer_syntax(source) == [], f"helper.py must run on Python {OLDEST_PYTHON}"


def test_the_syntax_check_sees_what_3_4_lacks():
    assert newer_syntax("x = f'{1}'\n") == ["line 1: f-string (3.6)"]
    assert newer_syntax("if (y := 1): pass\n") == ["line 1: walrus (3.8)"]
    assert newer_syntax("n = 1_000\n") == ["line 1: _ in a number (3.6)"]
    assert newer_syntax("f(*a, *b)\n") == ["line 1: several * in one call (3.5)"]


def test_the_session_helper_and_the_upload_receiver_are_one_file():
    helper = FAR_END.joinpath("helper.py").read_text()
    assert helper == session.HELPER_PROGRAM
    receiving = transfer.receive_command("stream", "/srv/bot/botserver.new", 10)
    assert quote(helper) in receiving and "receive /srv/bot/botserver.new 10 stream" in (receiving)


@pytest.mark.slow  # shellcheck
def test_every_script_a_switch_sends_is_clean_posix_sh():
    """`deploy --strategy switch`'s own scripts (deploy/switch.py), with a hostile path."""
    from gbdeploy.config import Switch
    from gbdeploy.deploy.switch import SwitchDeployment

    switch = Switch(ports=[5858, 5868], proxy="proxy", upstream_host="10.0.0.1")
    base = dataclasses.replace(
        standin_component(HOSTILE, HOSTILE + ".log", "gbuser", 5858),
        env={},
        health="http://localhost:{port}/health",
        switch=switch,
    )
    run = SimpleNamespace(
        base=base,
        component=base.on_port(5868),
        switch=switch,
        paths=layout.Paths(HOSTILE),
        token="t0k",
        live=5858,
        idle=5868,
        ssh_user="root",
        sha256="a" * 64,
        old_pids=[12, 34],
    )
    annotated = "".join(FAR_END.joinpath(name).read_text() for name in LIBRARY)
    built = {
        "beside": SwitchDeployment.beside_command(run, HOSTILE + ".new"),  # type: ignore[arg-type]
        "unplace": SwitchDeployment.unplace_command(run),  # type: ignore[arg-type]
        "stop-old": SwitchDeployment.stop_old_command(run),  # type: ignore[arg-type]
        "keep-serving": SwitchDeployment.keep_serving_command(run, 5868),  # type: ignore[arg-type]
        "note": SwitchDeployment.note_command(run, {"phase": "switching"}),  # type: ignore[arg-type]
    }
    for name, text in built.items():
        checked = text.replace(far_end.library(), annotated)
        assert shellcheck(checked, exclude=GENERATED_EXCLUDES) == "", name
        assert dash_n(text) == "", name


@pytest.mark.slow  # shellcheck
def test_every_script_of_the_switchs_processes_and_proxy_is_clean_posix_sh():
    """switch_process.py's and caddy_switch.py's scripts (one call line after procs.sh or
    proxy.sh), with a hostile path, backup, Caddyfile text and caddy command."""
    from gbdeploy import caddy_switch, switch_process

    sha = "a" * 64
    built = {
        "serving-pids": (switch_process.serving_pid_command(HOSTILE, 5858), "procs.sh"),
        "drain": (switch_process.drain_command(5858, 2.5), "procs.sh"),
        "stop-pid": (switch_process.stop_pid_command(HOSTILE, 12, 3.0), "procs.sh"),
        **{
            operation.name: (operation.command, "proxy.sh")
            for operation in (
                caddy_switch.backup(HOSTILE, "202612071015", sha),
                caddy_switch.write(HOSTILE, 'a {\n\trespond "it\'s $(id)"\n}\n', sha, HOSTILE),
                caddy_switch.restore(HOSTILE, HOSTILE + ".bak-202612071015"),
            )
        },
    }
    stripped = {"procs.sh": far_end.processes(), "proxy.sh": far_end.proxy()}
    for name, (text, source) in built.items():
        assert stripped[source] in text, name
        checked = text.replace(stripped[source], FAR_END.joinpath(source).read_text())
        # SC2317: a function this one call line leaves unused reads as unreachable
        assert shellcheck(checked, exclude=GENERATED_EXCLUDES + ",SC2317") == "", name
        assert dash_n(text) == "", name


@pytest.mark.slow  # shellcheck
def test_every_doctor_script_is_clean_posix_sh():
    """doctor's scripts that are more than one command (one call line after doctor.sh), with
    hostile paths, names and texts."""
    from gbdeploy.config import DoctorSettings
    from gbdeploy.doctor import components, daemons, host, proxy, switch, system

    hostile = "it's $(id) `x`"
    built = {
        "listeners": switch.listeners_command([5858, 5868]),
        "service-units": components.UNITS_COMMAND,
        "process-owners": components.process_owners_command(HOSTILE),
        "schedules": daemons.schedules_command(HOSTILE),
        "caddy-storage": proxy.caddy_storage_script(
            HOSTILE,
            "a {}\n",
            f"{{\n\tstorage file_system {HOSTILE}\n}}\na {{}}\n",
            root=HOSTILE,
            caddy=HOSTILE,
        ),
        "resolve": proxy.resolve_command(("example.com", hostile)),
        "flood-jail": proxy.flood_jail_command(hostile),
        "jail-files": proxy.jail_files_command(HOSTILE),
        "file-guard": system.file_guard_command(HOSTILE),
        "service-files": host.SERVICE_FILES,
        "files-mentioning": host.files_mentioning([HOSTILE, HOSTILE + ".2"], hostile),
        "container-configs": host.proxy_devices_check(
            DoctorSettings(via="incus", sudo=True)
        ).command,
    }
    annotated = FAR_END.joinpath("doctor.sh").read_text()
    for name, text in built.items():
        call = text.removeprefix(far_end.doctor() + "\n")  # then one call of a doctor.sh function
        assert call != text and f"\n{call.split()[0]}() {{" in annotated, name
        checked = text.replace(far_end.doctor(), annotated)
        # SC2317: a function this one call line leaves unused reads as unreachable
        assert shellcheck(checked, exclude=GENERATED_EXCLUDES + ",SC2317") == "", name
        assert dash_n(text) == "", name


def load_helper() -> SimpleNamespace:
    """helper.py as a module of its own (importing it runs nothing)."""
    namespace: dict[str, object] = {"__name__": "gbdeploy_far_end_helper"}
    exec(compile(FAR_END.joinpath("helper.py").read_text(), "helper.py", "exec"), namespace)
    return SimpleNamespace(**namespace)


def test_the_helper_starts_writing_to_disk_while_the_bytes_arrive(tmp_path):
    """The fdatasync before the rename is on the deploy's path: by then every full stretch of the
    file must already be on its way to disk, not all 150 MB at once."""
    helper = load_helper()
    started: list[tuple[int, int]] = []
    write_new = helper.write_new
    write_new.__globals__["writeback"] = lambda fd, offset, count: started.append((offset, count))
    block = bytes(range(256)) * 4096  # 1 MiB
    chunks = [memoryview(block)] * 20
    target = tmp_path / "botserver.new"

    digest, count = write_new(str(target), iter(chunks))

    assert count == 20 * len(block) and target.stat().st_size == count
    assert digest == hashlib.sha256(block * 20).hexdigest()
    every = helper.WRITEBACK_EVERY
    assert started == [(0, every), (every, every)]  # the last 4 MiB: the fdatasync's


def test_the_helper_finds_sync_file_range_on_linux():
    assert load_helper().writeback_function() is not None


def test_the_helper_keeps_what_a_command_wrote_just_before_it_exited(capfd):
    """On a busy machine the command may write and exit between two looks at its pipes: the
    answer must still carry its output (it came back empty, exit 0, and a probe failed)."""
    helper = load_helper()
    real = helper.select

    class LooksOnlyAfterTheExit:
        """The first look times out just after the command wrote its output and exited."""

        looked = False

        @classmethod
        def select(cls, r, w, x, timeout=None):
            if cls.looked:
                return real.select(r, w, x, timeout)
            cls.looked = True
            real.select(r, [], [])  # its output is there
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)  # and it has exited (not reaped)
            return [], [], []

    helper.run.__globals__["select"] = LooksOnlyAfterTheExit
    capfd.readouterr()

    helper.run(b"printf 'size 42'; printf oops >&2")

    assert capfd.readouterr().out == "ran 0 7 4\nsize 42oops"
