"""Small words every deploy command says the same way: an error's first line or whole message,
and who runs gbdeploy here."""

from __future__ import annotations

import getpass
import os


def first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__


def message(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(text).strip()


def local_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a CI container without a passwd entry for its uid
        return f"uid{os.getuid()}"
