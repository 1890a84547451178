"""What every parser shares: its error, and reading a YAML mapping."""

from __future__ import annotations

from typing import Any

import yaml


class ParseError(ValueError):
    """The text is not what the command or file format should look like (`line` when known)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


def yaml_mapping(text: str, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParseError(f"{what} is not YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParseError(f"{what} is not a YAML mapping")
    return data
