"""Which Forgejo the forge runs (`GET /api/v1/version`), and what that does to the rendered
workflows' `concurrency` group (FACTS.md): up to v12 `concurrency:` is ignored and a push
cancels the unfinished runs of its workflow, a deploy in mid-step included; v13 runs the group's
runs side by side (`cancel-in-progress: false` is no limit there); from v14 a later run queues.
`/runs` lists newest first only from v15."""

from __future__ import annotations

import re
from dataclasses import dataclass

QUEUES_SINCE = 14
NEWEST_FIRST_SINCE = 15


@dataclass(frozen=True)
class ForgeVersion:
    text: str  # as the server said it, e.g. "14.0.2+gitea-1.22.0"; "" when unknown

    @property
    def major(self) -> int | None:
        found = re.match(r"v?(\d+)\.", self.text)
        return int(found[1]) if found else None

    @property
    def newest_first(self) -> bool:
        """Whether `/runs` is ordered newest first (never relied on for more than paging)."""
        return self.major is not None and self.major >= NEWEST_FIRST_SINCE


def concurrency_notice(version: ForgeVersion) -> str | None:
    """What the rendered workflows' concurrency group does on this forge, when it does not
    queue a later deploy behind a running one; None from v14 on."""
    major = version.major
    if major is None or major >= QUEUES_SINCE:
        return None
    if major == 13:
        return (
            f"Forgejo {version.text} runs a component's deploys side by side: its concurrency "
            "group queues only from v14 (v13 takes `cancel-in-progress: false` as no limit). "
            "The second job's build waits for the first's source tree (flock), and the target's "
            "lock refuses the second deploy while the first runs; upgrade to v14 to queue them"
        )
    return (
        f"Forgejo {version.text} ignores `concurrency:` (it needs v13, and v14 to queue): a push "
        "cancels the unfinished run of the same workflow, even a deploy in mid-step. Release "
        "one commit at a time, and upgrade to v14 to queue deploys"
    )
