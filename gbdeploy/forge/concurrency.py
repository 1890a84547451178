"""Whether the configured forge queues a component's deploys, as the rendered workflows ask
(`forge.version`): asked and judged here once, for `gbdeploy workflows` (a note) and `doctor` (a
finding). Asked only with a token configured (a forge this project talks to), without retries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import ForgeSettings
from ..errors import GbdeployError
from .client import ForgeClient
from .version import concurrency_notice


@dataclass(frozen=True)
class ConcurrencyVerdict:
    status: Literal["pass", "fail", "skip"]  # skip: the forge could not be asked or did not say
    message: str


def forge_concurrency(forge: ForgeSettings) -> ConcurrencyVerdict | None:
    """What the forge's version does to the rendered workflows' concurrency group; None without
    a token."""
    if forge.token is None:
        return None
    try:
        with ForgeClient(forge, retries=0, retry_budget=0.0) as client:
            version = client.server_version()
    except GbdeployError as error:
        return ConcurrencyVerdict("skip", f"{forge.url}: {error}")
    if version.major is None:
        return ConcurrencyVerdict("skip", f"{forge.url} does not say its version")
    notice = concurrency_notice(version)
    if notice is None:
        return ConcurrencyVerdict("pass", f"Forgejo {version.text}: a component's deploys queue")
    return ConcurrencyVerdict("fail", notice)
