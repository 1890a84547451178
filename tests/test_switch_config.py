"""`components.X.switch`: the zero-downtime strategy's keys, refused at load naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gbdeploy.config import Switch
from gbdeploy.config_layers import load_settings
from gbdeploy.config_values import with_port

GOOD = """\
targets:
  proxy: {ssh: pragmatismo-proxy}
components:
  botserver:
    start: ./botserver --noconsole --port {port}
    health: http://localhost:{port}/health
    switch:
      ports: [5858, 5868]
      proxy: proxy
      caddyfile: /opt/gbo/conf/config
      upstream_host: 10.16.164.33
      drain: 10
"""


@pytest.fixture
def project(tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def test_a_switch_component_runs_on_the_port_in_use(project: Path):
    (project / "gbdeploy.yaml").write_text(GOOD)
    component = load_settings(start=project).component("botserver")

    assert component.switch == Switch(
        ports=[5858, 5868],
        proxy="proxy",
        upstream_host="10.16.164.33",
        caddyfile="/opt/gbo/conf/config",
        drain=10.0,
    )
    on_idle = component.on_port(component.switch.idle_port(5858))
    assert on_idle.start == "./botserver --noconsole --port 5868"
    assert on_idle.health == "http://localhost:5868/health"
    assert on_idle.env["PORT"] == "5868"
    assert component.switch.idle_port(5868) == 5858


def test_the_caddyfile_and_drain_have_defaults(project: Path):
    text = GOOD.replace("      caddyfile: /opt/gbo/conf/config\n", "").replace(
        "      drain: 10\n", ""
    )
    (project / "gbdeploy.yaml").write_text(text)
    switch = load_settings(start=project).component("botserver").switch
    assert switch is not None
    assert (switch.caddyfile, switch.drain) == ("/opt/gbo/conf/config", 10.0)


def test_with_port_replaces_only_the_port_placeholder():
    assert with_port("PORT_X=${HOME} ./x --port {port} {other}", 5868) == (
        "PORT_X=${HOME} ./x --port 5868 {other}"
    )


@pytest.mark.parametrize(
    ("change", "key", "said"),
    [
        (("ports: [5858, 5868]", "ports: [5858, 5858]"), "switch.ports", "two different ports"),
        (("ports: [5858, 5868]", "ports: [5858]"), "switch.ports", "two different ports"),
        (("ports: [5858, 5868]", "ports: [5858, 70000]"), "switch.ports[1]", "port number"),
        (("ports: [5858, 5868]", "ports: 5858"), "switch.ports", "expected a list"),
        (("upstream_host: 10.16.164.33", "upstream_host: '::1'"), None, ""),
        (("proxy: proxy", "proxy: nowhere"), "switch.proxy", "no target named 'nowhere'"),
        (("      proxy: proxy\n", ""), "switch.proxy", "is required"),
        (("upstream_host: 10.16.164.33", "upstream_host: 'a b'"), "switch.upstream_host", ""),
        (
            ("upstream_host: 10.16.164.33", "upstream_host: '10.0.0.1:5858'"),
            "switch.upstream_host",
            "",
        ),
        (("drain: 10", "drain: -1"), "switch.drain", "from 0 to 3600"),
        (("caddyfile: /opt/gbo/conf/config", "caddyfile: conf/config"), "switch.caddyfile", ""),
        (("drain: 10", "drian: 10"), "switch.drian", "unknown key"),
        (
            ("health: http://localhost:{port}/health", "health: http://localhost:5858/health"),
            "health",
            "{port}",
        ),
    ],
)
def test_a_wrong_switch_value_exits_2_naming_the_key(
    project: Path, run_gbdeploy, change: tuple[str, str], key: str | None, said: str
):
    (project / "gbdeploy.yaml").write_text(GOOD.replace(*change))
    if key is None:  # accepted: an IPv6 address is a host
        assert load_settings(start=project).component("botserver").switch is not None
        return
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2, result.text
    assert f"gbdeploy: error: config: components.botserver.{key}:" in result.err
    assert said in result.err
    assert "Traceback" not in result.err


def test_a_port_placeholder_without_a_switch_exits_2(project: Path, run_gbdeploy):
    text = GOOD.split("    switch:")[0]
    (project / "gbdeploy.yaml").write_text(text)
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2, result.text
    assert "config: components.botserver.start: {port}" in result.err
    assert "set components.botserver.switch" in result.err


def test_a_fixed_port_in_env_exits_2(project: Path, run_gbdeploy):
    text = GOOD.replace("    switch:\n", "    env: {PORT: '5858'}\n    switch:\n")
    (project / "gbdeploy.yaml").write_text(text)
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2, result.text
    assert "config: components.botserver.env.PORT:" in result.err


def test_a_systemd_component_cannot_switch(project: Path, run_gbdeploy):
    text = GOOD.replace("  botserver:\n", "  botserver:\n    restart: {systemd: system.service}\n")
    (project / "gbdeploy.yaml").write_text(text)
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2, result.text
    assert "config: components.botserver.switch: runs two processes" in result.err


def test_the_drain_can_be_set_from_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch):
    (project / "gbdeploy.yaml").write_text(GOOD)
    monkeypatch.setenv("GBDEPLOY_COMPONENTS_BOTSERVER_SWITCH_DRAIN", "3")
    switch = load_settings(start=project).component("botserver").switch
    assert switch is not None and switch.drain == 3.0


def test_doctor_reports_a_component_whose_env_dials_a_switch_port_directly(project: Path):
    """The operations guide's botui has BOTSERVER_URL=http://localhost:5858: once botserver
    alternates ports, every other deploy leaves botui dialling nothing."""
    from gbdeploy.doctor.switch import direct_env_check
    from gbdeploy.remote.connection import CommandResult

    botui = (
        "  botui:\n    binary: /opt/gbo/bin/botui\n    env:\n"
        "      BOTSERVER_URL: {url}\n      PORT: '5859'\n"
    )
    for url, status in [
        ("http://localhost:5858", "fail"),
        ("http://10.16.164.33:5868/api", "fail"),
        ("https://chat.example.com", "pass"),
        ("http://localhost:5859", "pass"),
    ]:
        (project / "gbdeploy.yaml").write_text(GOOD + botui.format(url=url))
        settings = load_settings(start=project)
        check = direct_env_check(
            settings.components.values(), settings.component("botserver"), "system"
        )
        verdict = check.judge(CommandResult(check.command, 0, "", ""))
        assert verdict.status == status, (url, verdict.saw)
        if status == "fail":
            assert f"components.botui.env.BOTSERVER_URL={url}" in verdict.saw
            assert "not through Caddy" in verdict.saw


def test_the_rendered_workflow_of_a_switch_component_deploys_with_switch(project: Path):
    """A push runs the deploy job without inputs: its default must be the one strategy a switch
    component accepts (`staged` would be refused with exit 2)."""
    from gbdeploy.workflows import render_workflow

    (project / "gbdeploy.yaml").write_text(GOOD + "    binary: /opt/gbo/bin/botserver\n")
    text = render_workflow(load_settings(start=project), "botserver")
    assert '--strategy "${STRATEGY:-switch}"' in text
    assert "default: switch" in text
    assert "- staged" not in text


def test_the_site_is_where_the_switch_confirms_the_health_through_caddy(project: Path):
    site = "      site: https://bots.example.com/api/\n      site_ca: /var/lib/caddy/root.crt\n"
    (project / "gbdeploy.yaml").write_text(GOOD + site)
    component = load_settings(start=project).component("botserver")
    assert component.switch is not None and component.health is not None
    assert component.switch.site_ca == "/var/lib/caddy/root.crt"
    assert component.switch.site_url(component.health) == "https://bots.example.com/api/health"
    (project / "gbdeploy.yaml").write_text(GOOD)
    assert load_settings(start=project).component("botserver").switch.site is None


@pytest.mark.parametrize(
    ("lines", "key", "said"),
    [
        ("site: bots.example.com", "switch.site", "http:// or https:// URL"),
        ("site: ftp://bots.example.com", "switch.site", "http:// or https:// URL"),
        ("site: https://bots.example.com/health?x=1", "switch.site", "without query"),
        ("site: https://user@bots.example.com", "switch.site", "http:// or https:// URL"),
        ("site_ca: /var/lib/caddy/root.crt", "switch.site_ca", "no site is set"),
        (
            "site: http://bots.example.com\n      site_ca: /root.crt",
            "switch.site_ca",
            "applies to an https:// site",
        ),
        ("site: https://bots.example.com\n      site_ca: root.crt", "switch.site_ca", ""),
    ],
)
def test_a_wrong_site_exits_2_naming_the_key(
    project: Path, run_gbdeploy, lines: str, key: str, said: str
):
    (project / "gbdeploy.yaml").write_text(GOOD + f"      {lines}\n")
    result = run_gbdeploy("release", "botserver", "--no-wait")
    assert result.code == 2, result.text
    assert f"gbdeploy: error: config: components.botserver.{key}:" in result.err
    assert said in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("site", [None, "https://bots.example.com"])
def test_doctor_suggests_a_site_when_the_switch_cannot_confirm_through_caddy(
    project: Path, site: str | None
):
    from gbdeploy.doctor.model import FollowUp
    from gbdeploy.doctor.switch import upstream_check
    from gbdeploy.remote.connection import CommandResult

    (project / "gbdeploy.yaml").write_text(GOOD + (f"      site: {site}\n" if site else ""))
    component = load_settings(start=project).component("botserver")
    assert component.switch is not None
    check = upstream_check(component, component.switch, "proxy")
    caddyfile = "bots.example.com {\n\treverse_proxy 10.16.164.33:5858\n}\n"
    follow = check.judge(CommandResult(check.command, 0, caddyfile, ""))
    assert isinstance(follow, FollowUp)
    curl = '{"status": "ok", "commit": "abc"}\n__gbdeploy_http_status=200\n'
    verdict = follow.judge(CommandResult(follow.command, 0, curl, ""))
    assert verdict.status == "pass"
    suggests = "set components.botserver.switch.site" in verdict.saw
    assert suggests == (site is None), verdict.saw
