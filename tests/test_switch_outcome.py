"""How a switch that went through tells what it could not finish, without a target: the old
process that survives SIGKILL after Caddy moved to the new one."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gbdeploy.config_layers import load_settings
from gbdeploy.deploy import engine
from gbdeploy.deploy.switch import SwitchDeployment
from gbdeploy.errors import DeployFailed
from gbdeploy.output import Reporter
from gbdeploy.remote.connection import CommandResult
from tests.test_switch_config import GOOD


class StopThatLeavesOne:
    """The target's answer to the stop of the old pids: 4242 stopped, 4243 survived SIGKILL."""

    def run(self, command: str, **_: object) -> CommandResult:
        return CommandResult(command, 1, "stopped 4242\n", "survived SIGKILL: 4243\n")

    def close(self) -> None:
        pass


def test_an_old_process_that_survives_sigkill_is_named_with_what_to_do(
    tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gbdeploy.yaml").write_text(GOOD)
    settings = load_settings(start=tmp_path)
    switch = SwitchDeployment(
        settings,
        settings.component("botserver"),
        Reporter(stream=io.StringIO()),
        action="deploy",
        commit="b" * 40,
        strategy="switch",
    )
    switch.old_pids = [4242, 4243]
    switch.session = StopThatLeavesOne()  # type: ignore[assignment]
    with pytest.raises(DeployFailed) as stopping:
        switch.stop_old_step().run()
    switch.switched, switch.on_target = True, "kept"  # as the beside undo finds the journal

    told = switch.outcome(engine.Undone(stopping.value, ["stop old"]))

    assert told.exit_code == 1
    said = str(told)
    assert "Caddy dials port 5868, where the new binary serves and was kept" in said
    assert "pid 4243 survived SIGKILL" in said and "4242" not in said
    assert "ps -o pid,stat,wchan -p 4243" in (told.hint or "")
    assert "gbdeploy deploy botserver --recover" in (told.hint or "")
