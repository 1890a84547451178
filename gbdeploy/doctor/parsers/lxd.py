"""LXD: an instance's config and devices, the config dump, the ports a listen address names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import ParseError, yaml_mapping


# --- LXD ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LxcDevice:
    name: str
    type: str
    source: str | None = None
    pool: str | None = None
    path: str | None = None
    listen: str | None = None
    connect: str | None = None

    @property
    def is_host_mount(self) -> bool:
        """A disk that is not a storage-pool volume: a path of the host (or another container)."""
        return self.type == "disk" and bool(self.source) and not self.pool

    @property
    def listen_ports(self) -> frozenset[int]:
        return listen_ports(self.listen) if self.type == "proxy" and self.listen else frozenset()


@dataclass(frozen=True)
class LxcInstanceConfig:
    config: dict[str, str]
    devices: tuple[LxcDevice, ...]

    @property
    def privileged(self) -> bool:
        return self.config.get("security.privileged", "false").lower() == "true"


def _devices(data: Any, what: str) -> tuple[LxcDevice, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ParseError(f"{what}: devices are not a mapping")
    devices = []
    for name, raw in data.items():
        if not isinstance(raw, dict) or "type" not in raw:
            raise ParseError(f"{what}: device {name!r} has no type")
        keys = ("source", "pool", "path", "listen", "connect")
        devices.append(
            LxcDevice(str(name), str(raw["type"]), **{k: str(raw[k]) for k in keys if k in raw})
        )
    return tuple(devices)


def parse_lxc_config(text: str) -> LxcInstanceConfig:
    """`lxc config show NAME --expanded`: the instance's `config:` keys and `devices:`."""
    data = yaml_mapping(text, "lxc config show")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ParseError("lxc config show: `config` is not a mapping")
    # LXD writes every value as a string ("true"); a hand-edited YAML may hold a bool.
    values = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}
    return LxcInstanceConfig(values, _devices(data.get("devices"), "lxc config show"))


def parse_lxc_devices(text: str) -> tuple[LxcDevice, ...]:
    """`lxc config device show NAME`: a mapping of device name to its keys."""
    return _devices(yaml_mapping(text, "lxc config device show"), "lxc config device show")


CONTAINER_MARKER = "### lxc-container "


def parse_config_dump(text: str) -> dict[str, LxcInstanceConfig]:
    """Several `lxc config show NAME --expanded` outputs, each after a `### lxc-container NAME`
    line (what the proxy-devices probe prints)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(CONTAINER_MARKER):
            current = sections.setdefault(line[len(CONTAINER_MARKER) :].strip(), [])
        elif current is not None:
            current.append(line)
        elif line.strip():
            raise ParseError(f"config dump does not start with a {CONTAINER_MARKER!r} line")
    return {name: parse_lxc_config("\n".join(lines)) for name, lines in sections.items()}


def listen_ports(listen: str) -> frozenset[int]:
    """The ports of a proxy device's `listen`: `tcp:0.0.0.0:80`, `udp:[::]:53`,
    `tcp:1.2.3.4:80,443`, `tcp:0.0.0.0:8000-8002`."""
    _, _, address = listen.partition(":")
    spec = address.rsplit(":", 1)[-1]
    ports: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ParseError(f"proxy listen address {listen!r} has no port")
        ports.update(range(int(low), int(high or low) + 1))
    return frozenset(ports)
