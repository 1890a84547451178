"""The code that runs on a target, as files (`gbdeploy/remote/far_end/`) and as the scripts Python
builds around them: each one passes Debian's shellcheck (POSIX sh) and `dash -n`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from importlib.resources import files
from types import SimpleNamespace

import pytest

from gbdeploy import freeze, service_control
from gbdeploy.config import Restart
from gbdeploy.deploy import layout
from gbdeploy.deploy.service import service_of
from gbdeploy.remote import far_end
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


@pytest.mark.parametrize("name", ["lib.sh", "procs.sh"])
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
        "inspect": freeze.status_command(paths),
        "freeze": freeze.acquire_command(paths, json.dumps({"by": "me"}), "t0k"),
        "recipe": service_of(component).recipe("gbops"),
    }
    run = SimpleNamespace(component=component, paths=paths, ssh_user="gbops")
    for action in service_control.ACTIONS:
        built[action] = service_control.service_script(run, action)  # type: ignore[arg-type]
    return built


@pytest.mark.parametrize("mode", ["process", "systemd"])
def test_every_script_the_deploy_sends_is_clean_posix_sh(mode):
    # The library is sent without its comments; checked with them, its directives apply.
    annotated = FAR_END.joinpath("procs.sh").read_text() + FAR_END.joinpath("lib.sh").read_text()
    for name, text in scripts(mode).items():
        assert far_end.library() in text or name == "recipe", name
        checked = text.replace(far_end.library(), annotated)
        assert shellcheck(checked, exclude=GENERATED_EXCLUDES) == "", name
        assert dash_n(text) == "", name
