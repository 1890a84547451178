"""Every error gbdeploy raises, and the exit code each one means.

    GbdeployError                  exit 1 unless a subclass says otherwise
    ├── UsageError                 exit 2: bad input, bad config, refused preflight
    │   ├── ConfigError            a key or value in gbdeploy.yaml
    │   ├── PreflightError         the repos or the target are not in a state to release
    │   ├── ForgeAuthError         the forge refused the token (401/403)
    │   ├── ForgeNotFound          owner/repo/workflow/run does not exist (404)
    │   └── HostKeyError           the target's host key is unknown or does not match
    ├── OperationFailed            exit 1: failed, and the system was left safe
    │   ├── PushRejected           a remote refused a push (`pushed_to` says who has it)
    │   ├── ForgeUnavailable       the forge did not answer, or kept answering 5xx
    │   ├── RemoteError            an SSH connection or a remote command failed
    │   ├── LockHeld               another deploy holds the target's lock
    │   ├── DeployFailed           the deploy failed and was undone
    │   ├── VerificationFailed     a post-deploy check failed (`check` names it)
    │   └── DoctorFailed           `doctor` found production invariants broken (`failed` names them)
    ├── CIRunFailed                exit 3: the CI run finished unsuccessfully
    ├── WaitTimeout                exit 4: gave up waiting (`resume` says how to go on)
    └── RestoreFailed              exit 5: failed and could not restore; a person must act

Messages never contain the forge token: `redact` is applied to every message at the CLI. Any
other exception is a bug: `internal_error` says so (exit 1), with the traceback only on request.
"""

from __future__ import annotations

import logging
import os
import traceback


class GbdeployError(Exception):
    """Base class. `hint` is the next thing the user should do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(GbdeployError):
    exit_code = 2


class ConfigError(UsageError):
    """A wrong key or value. `key` is its dotted path, e.g. `components.botserver.binary`."""

    def __init__(self, key: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"config: {key}: {problem}", hint=hint)
        self.key = key


class PreflightError(UsageError):
    pass


class ForgeAuthError(UsageError):
    pass


class ForgeNotFound(UsageError):
    pass


class HostKeyError(UsageError):
    pass


class OperationFailed(GbdeployError):
    exit_code = 1


class PushRejected(OperationFailed):
    def __init__(
        self, message: str, *, remote: str, pushed_to: list[str], hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.remote = remote
        self.pushed_to = pushed_to


class ForgeUnavailable(OperationFailed):
    pass


class RemoteError(OperationFailed):
    pass


class LockHeld(OperationFailed):
    pass


class DeployFailed(OperationFailed):
    pass


class VerificationFailed(OperationFailed):
    def __init__(self, message: str, *, check: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.check = check


class DoctorFailed(OperationFailed):
    def __init__(self, message: str, *, failed: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.failed = failed


class CIRunFailed(GbdeployError):
    exit_code = 3


class WaitTimeout(GbdeployError):
    exit_code = 4


class RestoreFailed(GbdeployError):
    exit_code = 5


def redact(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each non-empty secret with `***`, also where it appears
    escaped (as in a repr of the text or of its bytes)."""
    for secret in secrets:
        if not secret:
            continue
        forms = {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
    return text


DEBUG_VARIABLE = "GBDEPLOY_DEBUG"


def tracebacks_wanted() -> bool:
    """GBDEPLOY_DEBUG=1, or debug logging on (Invoke's --debug, or the `gbdeploy` logger)."""
    if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
        return True
    return any(
        logging.getLogger(name).isEnabledFor(logging.DEBUG) for name in ("gbdeploy", "invoke")
    )


def internal_error(error: BaseException, *secrets: str | None) -> str:
    """The message for an exception nothing in gbdeploy expected: a bug, not the user's input.
    With `tracebacks_wanted()` the traceback comes first. Secrets are redacted throughout."""
    text = (
        f"gbdeploy: internal error: {type(error).__name__}: {error}\n"
        "  this is a bug in gbdeploy, not a problem with your input: please report it to the "
        "gbdeploy maintainers (the issue tracker of the repository you installed gbdeploy from) "
        "with the command you ran"
    )
    if tracebacks_wanted():
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__)) + text
    else:
        text += f" and its output with {DEBUG_VARIABLE}=1 (which adds the traceback)"
    return redact(text, *secrets)
