"""The secret check on a rendered workflow's own text: no `run:` line may print a secret, the deploy
key file or the environment, or trace commands while a secret is in reach."""

from __future__ import annotations

import re

import yaml

from .errors import ConfigError

SECRET_NAMES = ("DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS")

# Commands that print what they are given or read, and shell settings that print every command.
_PRINTERS = re.compile(
    r"(?:^\s*|[;&|({]\s*|\b(?:then|do|else)\s+)"
    r"(cat|echo|printf|tee|head|tail|less|more|base64|xxd|od|hexdump|strings|env|printenv|"
    r"declare|typeset|export\s+-p|set|logger|curl|wget|nc)\b"
)
_TRACE = re.compile(r"\bset\s+(?:-[a-zA-Z]*[xv]|-o\s+(?:xtrace|verbose))|\bbash\s+-[a-zA-Z]*x")
_FILE_REDIRECT = re.compile(r"(?<![0-9&])>\s*(?!&|\s*/dev/(?:stdout|stderr|tty|fd/[12]))\"?[$/\w]")


def _holds_secret(value: object) -> bool:
    """A secret, or the job's own token, by expression."""
    return "secrets." in str(value) or bool(
        re.search(r"\b(?:github|forgejo|forge)\.token\b", str(value))
    )


def secret_exposures(text: str) -> list[str]:
    """Every line of the workflow's `run:` scripts that could print a secret or the key file:
    tracing (`set -x`, `set -v`), a secret's variable or the key file given to a command that
    prints (echo, printf, cat, tee, env, …) unless its output goes to a file, a pipe carrying
    one, or a secret interpolated into a script by `${{ secrets.… }}`. Empty when clean."""
    data = yaml.safe_load(text)
    problems: list[str] = []
    jobs = data.get("jobs") or {}
    names = set(SECRET_NAMES)
    for scope in [data, *jobs.values()]:
        for key, value in (scope.get("env") or {}).items():
            if _holds_secret(value):
                names.add(str(key))
    outer_secrets = len(names) > len(SECRET_NAMES)  # a secret in the workflow's or job's env
    for job_name, job in jobs.items():
        for step in job.get("steps") or []:
            for key, value in (step.get("env") or {}).items():
                if _holds_secret(value):
                    names.add(str(key))
        for index, step in enumerate(job.get("steps") or [], 1):
            script = str(step.get("run", ""))
            where = f"jobs.{job_name}.steps[{index}] ({step.get('name', '')})"
            if _holds_secret(script):
                problems.append(f"{where}: a secret is written into the script text")
            secret = re.compile(
                r"\$\{?(?:" + "|".join(sorted(names)) + r")\b|deploy_key|\$\{?\w*SSH_IDENTITY"
            )
            step_secrets = any(_holds_secret(v) for v in (step.get("env") or {}).values())
            exposed = step_secrets or outer_secrets or bool(secret.search(script))
            for number, line in enumerate(script.splitlines(), 1):
                code = line.split(" #", 1)[0]
                if exposed and _TRACE.search(code):
                    problems.append(f"{where} line {number}: traces commands: {line.strip()}")
                    continue
                if re.fullmatch(r"\s*(?:env|printenv|set|export\s+-p|declare\s+-p)\s*", code):
                    problems.append(f"{where} line {number}: prints the environment")
                    continue
                if not secret.search(code):
                    continue
                if re.search(r"(?<!\|)\|(?!\|)", code):
                    problems.append(f"{where} line {number}: pipes a secret: {line.strip()}")
                elif _PRINTERS.search(code) and not _FILE_REDIRECT.search(code):
                    problems.append(f"{where} line {number}: prints a secret: {line.strip()}")
    return problems


def refuse_exposures(text: str, key: str) -> None:
    problems = secret_exposures(text)
    if problems:
        raise ConfigError(key, "the rendered workflow could print a secret: " + problems[0])
