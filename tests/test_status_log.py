"""`status` over the real sshd when the last line of the deploy log is not one gbdeploy wrote."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from deploy_world import OLD, deployed

from gbdeploy.deploy.status import run_status
from gbdeploy.output import Reporter


@pytest.mark.parametrize("last_line", ["[1, 2]", "null", "42", '"deployed"', "not json {"])
def test_status_reads_a_deploy_log_whose_last_line_is_not_an_object(world, artifacts, last_line):
    sha256 = deployed(world, artifacts, OLD)
    log = Path(f"{world.binary}.deploys.log")
    log.write_text('{"time": "2026-12-01T10:00:00+00:00", "result": "ok"}\n' + last_line + "\n")

    table = io.StringIO()
    run_status(world.settings(), Reporter(stream=table), component="botserver")
    assert table.getvalue().startswith("botserver on ")
    assert f"pid {world.running()[0]} as {world.user}" in table.getvalue()

    as_json = io.StringIO()
    run_status(world.settings(), Reporter(stream=as_json), component="botserver", as_json=True)
    [found] = json.loads(as_json.getvalue())
    assert found["sha256"] == sha256
    assert found["last_deploy"] == {"unreadable": last_line}
