"""When the deploy's health wait checks the service, on a clock of its own: the settle window is
held in full and ends at its end, not up to a check interval later."""

from __future__ import annotations

from itertools import pairwise

import pytest

from gbdeploy.deploy import health
from gbdeploy.output import Reporter
from gbdeploy.remote.probes import Health
from gbdeploy_sandbox.settings import standin_component

CHECK_SECONDS = 0.04  # what one check (an exchange with the target) costs on the fake clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class Checks(health.ServiceChecks):
    """A service that is up and healthy from the first check on; records when each check saw it."""

    def __init__(self, clock: FakeClock, settle: float) -> None:
        self.clock = clock
        self.component = standin_component(
            "/srv/bot/botserver", "/srv/bot/log", "gb", 8080, health_settle=settle
        )
        self.reporter = Reporter()
        self.commit = "abc1234"
        self.unchanged = False
        self.users = []
        self.seen: list[float] = []

    def check(self) -> tuple[str, dict[int, str], Health | None]:
        self.seen.append(self.clock.now)  # what the target saw, at the start of the exchange
        self.clock.now += CHECK_SECONDS
        answer = Health(self.component.health, 200, {"status": "ok", "commit": self.commit})
        return "up", {4242: "gb"}, answer


@pytest.mark.parametrize("settle", [0.25, 1.0, 3.0, 4.1])
def test_the_settle_window_is_held_in_full_and_ends_at_its_end(monkeypatch, settle):
    clock = FakeClock()
    monkeypatch.setattr(health, "time", clock)
    checks = Checks(clock, settle)
    started = clock.now

    detail = checks.wait_until_up(settle=settle)

    assert f"stayed healthy {settle:g}s" in detail
    first_healthy_known = checks.seen[0] + CHECK_SECONDS  # when the deploy learnt of it
    assert checks.seen[-1] - first_healthy_known >= settle - 1e-9  # the window is held in full
    assert clock.now - started <= CHECK_SECONDS + settle + CHECK_SECONDS + 1e-9  # and no longer
    gaps = [later - earlier for earlier, later in pairwise(checks.seen)]
    assert max(gaps) <= health.SETTLE_INTERVAL + CHECK_SECONDS + 1e-9  # still watched throughout
