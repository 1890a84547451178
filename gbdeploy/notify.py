"""`notify: {webhook: URL}` — one JSON POST per deploy, rollback and release.

The body carries `text` (one line, what Slack, Mattermost and Rocket.Chat incoming webhooks show)
beside the facts as fields. It never holds the forge token: every value is redacted before it is
sent. A webhook that is down, slow (beyond `notify.timeout`) or answers an error is one warning
line, never a failure: the operation's own result stands. The URL itself may hold a secret (many
webhook URLs do), so only its scheme and host are ever printed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from . import __version__
from .config import NotifySettings, token_values
from .errors import redact
from .hooks import DeployFacts
from .output import Reporter


def shown_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") else url


def summary(facts: DeployFacts) -> str:
    change = f"{_short(facts.from_commit)} → {_short(facts.to_commit)}"
    text = f"{facts.action} {facts.component} {change} on {facts.target}: {facts.result}"
    if facts.who:
        text += f" (by {facts.who})"
    if facts.run_url:
        text += f" {facts.run_url}"
    return text


def _short(commit: str | None) -> str:
    return (commit or "unknown")[:12]


def payload(facts: DeployFacts) -> dict[str, Any]:
    body: dict[str, Any] = {
        "text": summary(facts),
        "event": facts.action,
        "component": facts.component,
        "target": facts.target,
        "from_commit": facts.from_commit,
        "to_commit": facts.to_commit,
        "sha256": facts.sha256,
        "strategy": facts.strategy,
        "result": facts.result,
        "ok": facts.result in ("ok", "unchanged"),
        "who": facts.who,
        "run_url": facts.run_url,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gbdeploy": __version__,
    }
    if facts.error:
        body["error"] = facts.error
    if facts.log_tail:
        body["log_tail"] = facts.log_tail
    return body


def encoded(facts: DeployFacts) -> bytes:
    """The body as sent: JSON, with any token value replaced by `***`."""
    text = json.dumps(payload(facts), ensure_ascii=False, sort_keys=True)
    return redact(text, *token_values()).encode()


def plan_line(settings: NotifySettings) -> str | None:
    if not settings.webhook:
        return None
    return f"notify: POST a JSON summary to {shown_url(settings.webhook)} (not sent in a dry run)"


def send(settings: NotifySettings, facts: DeployFacts, reporter: Reporter) -> bool:
    """POST the notification; a failure of any kind is one warning line. True when delivered."""
    if not settings.webhook:
        return False
    import httpx  # here, not at the top: a deploy without a webhook never loads it (~30 ms)

    where = shown_url(settings.webhook)
    try:
        response = httpx.post(
            settings.webhook,
            content=encoded(facts),
            headers={"Content-Type": "application/json", "User-Agent": f"gbdeploy/{__version__}"},
            timeout=settings.timeout,
            follow_redirects=False,
        )
    except httpx.HTTPError as error:
        why = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        why = why.replace(settings.webhook, where)
        reporter.say(f"warning: notify: {where} did not take the notification ({why})")
        return False
    if response.status_code >= 300:
        reporter.say(f"warning: notify: {where} answered HTTP {response.status_code}")
        return False
    return True
