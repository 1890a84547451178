"""`gbdeploy workflows`: the Forgejo workflow files that build and deploy each component.

Where a component's workflow lives follows `components.NAME.workflow_repo`:

- `root` (and the root repository named as OWNER/REPO): `.forgejo/workflows/<workflow>` in the
  root repository, run on a push to `git.branch` that changes the submodule (a pointer change is a
  change of the path `botserver`, which `botserver/**` alone does not match under act's rules, so
  both are listed), checked out with only the submodules its build needs (its own and its
  `siblings`), with the token of the secret `workflows.submodules_secret` names when set.
- `component` (or another OWNER/REPO): the file to commit in the component's own repository
  (written to `<submodule>/.forgejo/workflows/`, with a copy of gbdeploy.yaml beside it, which
  the deploy step reads): run on any push to its `git.branch`, no `paths` filter (the whole
  repository is the component); its siblings are fetched from the forge.

Every job, as it must be to run unchanged on real Forgejo and forgejo-runner:

- `concurrency: {group: gbdeploy-deploy-<component>, cancel-in-progress: false}`: a later push
  queues behind a deploy in progress instead of cancelling it (a `group` is required: without
  one, `cancel-in-progress: false` means no limit at all);
- `runs-on: <workflows.runs_on>` (default `gbo`, the label of General Bots' host-mode runner);
- as host mode runs every step (on a PTY, with the runner daemon's environment): no step may
  ask anything (`--yes`, `GIT_TERMINAL_PROMPT=0`, no askpass), and the build puts
  `workflows.toolchain_path` before the daemon's PATH (sccache only from there);
- the build runs in the component's persistent source tree (`workflows.source_dir`), updated to
  the run's commit under `flock` beside its siblings (one cargo workspace), with
  `CARGO_TARGET_DIR`, `SCCACHE_DIR` and `CARGO_HOME` on the runner's persistent disk
  (`workflows.*`), so a small change is an incremental build; an artifact under `target/` is
  taken from `CARGO_TARGET_DIR` when the build put it there, and copied out under the lock;
- the build's output saved as `<workflows.logs_dir>/<component>-build-<UTC time>-<run>.log`;
- gbdeploy installed from a pinned source no one else can publish to (`pinned_install`: by
  default the wheel and hash lock `install_lock` writes beside the workflows) into a venv keyed
  by the lock and pin, unless the runner already has `gbdeploy` on its PATH;
- every value from the configuration reaches the shell through `env:` (a JSON string, which is a
  YAML scalar) and is used as "$VARIABLE": nothing in a name, path or artifact is ever parsed as
  shell; only `build` is shell by design;
- the deploy key and known_hosts come from the secrets `DEPLOY_SSH_KEY`/`DEPLOY_KNOWN_HOSTS`
  through `env:`, are written under `$RUNNER_TEMP` with mode 0600 and removed when the deploy
  step ends; `secret_exposures` checks the rendered text itself for any step that could print
  them, and rendering refuses a workflow that has one.

Steps run with `shell: bash` (`bash --noprofile --norc -eo pipefail`).
`gbdeploy_sandbox.runner` executes these exact `run:` steps in the demo sandbox.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import posixpath
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from .config import Component, Settings
from .config_layers import CONFIG_NAMES
from .deploy import STRATEGIES
from .errors import ConfigError, GbdeployError, UsageError
from .forge.client import ForgeClient
from .forge.version import concurrency_notice
from .install_lock import INSTALL_DIR, LOCK_FILE, install_files
from .output import Reporter

CHECKOUT_ACTION = "actions/checkout@v4"
MAINTENANCE_WORKFLOW = "runner-maintenance.yaml"
MAINTENANCE_CRON = "17 3 * * *"
VENV_ROOT = "$HOME/.cache/gbdeploy"
SSH_DIR = "${RUNNER_TEMP:-$HOME}/gbdeploy-ssh"
GBDEPLOY_BIN = "${RUNNER_TEMP:-$HOME}/gbdeploy-bin"  # the install step writes where gbdeploy is
# Host mode runs each step on a PTY: git would ask for a username there after a 401 and wait
# for the 3-hour job timeout. No fetch in a job may ask anything.
NO_PROMPTS = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "",
    "SSH_ASKPASS": "",
    "GCM_INTERACTIVE": "never",
    "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
    "PIP_NO_INPUT": "1",
}
SECRET_NAMES = ("DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS")
HEADER = "# Rendered by `gbdeploy workflows`. Do not edit: change gbdeploy.yaml and render again.\n"

_COMMIT = r"[0-9a-f]{40}|[0-9a-f]{64}"
_VCS = re.compile(
    r"(?:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*@\s*)?"
    r"git\+(?P<scheme>https|http|ssh|file)://(?P<rest>[^\s#'\"]+)@(?P<commit>" + _COMMIT + ")"
    r"(?:#(?P<fragment>[A-Za-z0-9_=&./-]+))?"
)
_FILE = re.compile(r"(?P<path>[A-Za-z0-9_][A-Za-z0-9_./+-]*)#sha256=(?P<sha256>[0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    """A pinned source of gbdeploy: a pip requirement, and for a file its sha256. `wheel`: the
    wheel `gbdeploy workflows` writes beside the workflows, named with its hash in the lock."""

    requirement: str
    sha256: str | None = None  # set for a file in the repository: checked before pip sees it
    why: str = ""  # how an automatic pin was found, for the report
    kind: Literal["wheel", "vcs", "file"] = "vcs"

    @property
    def url(self) -> str:
        """The repository URL of a VCS pin (what `git ls-remote` checks)."""
        found = _VCS.search(self.requirement)
        return f"{found['scheme']}://{found['rest']}" if found else ""


def parse_pin(value: str, key: str = "workflows.install") -> Pin:
    """`git+URL@<full commit>` (optionally `gbdeploy @ …`), or `PATH#sha256=<hex>` of a file in
    the repository; anything else (a bare name, a version, a branch or tag) is refused."""
    value = value.strip()
    if _VCS.fullmatch(value):
        return Pin(value)
    found = _FILE.fullmatch(value)
    if found:
        path = found["path"]
        if ".." in path.split("/") or path.startswith("/"):
            raise ConfigError(key, f"the file must be inside the repository, got {path!r}")
        return Pin(path, found["sha256"], kind="file")
    raise ConfigError(
        key,
        f"{value!r} is not a pinned source: a name (or a version, branch or tag) is whatever is "
        "published under it when the job runs, and the job holds the production deploy key",
        hint="use git+https://HOST/OWNER/gbdeploy.git@<40-hex commit>, or a wheel committed in "
        "the repository as PATH#sha256=<its sha256> (or leave it empty: the commit this gbdeploy "
        "the wheel `gbdeploy workflows` writes beside the workflows)",
    )


def pinned_install(settings: Settings) -> Pin:
    """`workflows.install` checked; when empty, the wheel of this gbdeploy that `gbdeploy
    workflows` writes beside the workflows (`install_lock`), or with `workflows.source` set the
    commit this gbdeploy was installed from (PEP 610 `direct_url.json`, or the git clone it runs
    from) at that repository."""
    if settings.workflows.install:
        return parse_pin(settings.workflows.install)
    if not settings.workflows.source:
        return Pin(LOCK_FILE, kind="wheel", why=f"this gbdeploy as a wheel in {INSTALL_DIR}/")
    source = settings.workflows.source
    commit, where = _own_commit()
    if commit is None:
        raise ConfigError(
            "workflows.install",
            f"is empty and this gbdeploy's commit cannot be found ({where})",
            hint="set it to git+URL@<40-hex commit> or PATH#sha256=<hex>",
        )
    source = source.removeprefix("git+")
    pin = parse_pin(f"gbdeploy @ git+{source}@{commit}", "workflows.source")
    return Pin(pin.requirement, why=f"the commit this gbdeploy {where}")


def _own_commit() -> tuple[str | None, str]:
    """This gbdeploy's commit and how it was found."""
    directory = Path(__file__).resolve().parent.parent
    try:
        text = importlib.metadata.distribution("gbdeploy").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        text = None
    data = json.loads(text) if text else {}
    vcs = data.get("vcs_info") or {}
    commit = str(vcs.get("commit_id", ""))
    if vcs.get("vcs") == "git" and re.fullmatch(_COMMIT, commit):
        return commit, f"installed from {data.get('url', '')}"
    url = str(data.get("url", ""))
    if url.startswith("file://") and not (directory / "pyproject.toml").is_file():
        directory = Path(url.removeprefix("file://"))
    if not (directory / "pyproject.toml").is_file():
        return None, "installed without VCS information"
    head = subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode != 0 or not re.fullmatch(_COMMIT, head.stdout.strip()):
        return None, f"{directory} is not a git clone"
    changed = subprocess.run(
        ["git", "-C", str(directory), "status", "--porcelain", "--", "gbdeploy", "pyproject.toml"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    uncommitted = "; its uncommitted changes are NOT in the jobs" if changed else ""
    return head.stdout.strip(), f"runs from ({directory}, HEAD{uncommitted})"


def _yaml(value: str) -> str:
    """A YAML scalar for `value` (a JSON string is a valid YAML double-quoted scalar)."""
    return json.dumps(value)


def _block(text: str, indent: int) -> str:
    """`text` as the body of a YAML literal block (`run: |`) at `indent` spaces."""
    return textwrap.indent(text.rstrip("\n") + "\n", " " * indent)


def _env(values: dict[str, str], indent: int) -> str:
    pad = " " * indent
    return "".join(f"{pad}{name}: {_yaml(value)}\n" for name, value in values.items())


def _refuse_expressions(key: str, value: str) -> None:
    if "${{" in value:
        raise ConfigError(key, "must not contain `${{`: it would be evaluated by the runner")


def placement(settings: Settings, component: Component) -> str:
    """`root` when the workflow lives in the root repository, else `component` (its own, or
    another OWNER/REPO, started by the submodule push)."""
    where = component.workflow_repo
    if where in ("root", f"{settings.forge.owner}/{settings.forge.repo}"):
        return "root"
    if where != "component" and not re.fullmatch(r"[\w.-]+/[\w.-]+", where):
        raise ConfigError(
            f"components.{component.name}.workflow_repo",
            f"expected root, component or OWNER/REPO, got {where!r}",
        )
    return "component"


def _checked(component: Component, in_root: bool) -> tuple[str, str]:
    """The component's submodule path and its artifact path relative to the build directory's
    repository top (the root checkout, or the component's own checkout)."""
    key = f"components.{component.name}"
    submodule = component.submodule.strip("/")
    parts = submodule.split("/") if submodule else []
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise ConfigError(
            f"{key}.submodule", f"must be a path inside the root repository, got {submodule!r}"
        )
    if not component.build:
        raise ConfigError(f"{key}.build", "is required to render its workflow (the build command)")
    artifact = posixpath.normpath(component.artifact or "")
    if not component.artifact or artifact.startswith(("/", "../")) or artifact in (".", ".."):
        raise ConfigError(
            f"{key}.artifact",
            f"must be a path relative to the submodule directory, got {component.artifact!r}",
        )
    for name in ("submodule", "artifact", "build", "workflow", "name"):
        _refuse_expressions(f"{key}.{name}", getattr(component, name))
    return submodule, (posixpath.join(submodule, artifact) if in_root else artifact)


def siblings(settings: Settings, component: Component) -> dict[str, str]:
    """Directory beside the component → OWNER/REPO, of each of `components.X.siblings`."""
    found: dict[str, str] = {}
    for entry in component.siblings:
        path, _, repository = entry.partition("=")
        found[path] = repository or f"{settings.forge.owner}/{path.rsplit('/', 1)[-1]}"
    return found


def _workspace_toml(submodule: str, paths: list[str]) -> str:
    """The cargo workspace the component and its siblings build in (as the real workflows write
    it); empty without siblings."""
    if not paths:
        return ""
    members = ", ".join(json.dumps(path) for path in [submodule, *paths])
    return f'[workspace]\nresolver = "2"\nmembers = [{members}]\n'


def _job_env(
    settings: Settings, component: Component, build_dir: str, artifact: str, submodule: str
) -> str:
    name = component.name
    w = settings.workflows
    beside = siblings(settings, component)
    for path in beside:
        _refuse_expressions(f"components.{name}.siblings", path)
        if path == submodule or path.startswith(f"{submodule}/"):
            raise ConfigError(
                f"components.{name}.siblings", f"{path!r} is the component's own directory"
            )
    values = {
        "GBDEPLOY_COMPONENT": name,
        "GBDEPLOY_BUILD_DIR": build_dir,
        "GBDEPLOY_SUBMODULE": submodule,
        "GBDEPLOY_SOURCE_DIR": w.source_dir.replace("{component}", name),
        "GBDEPLOY_SIBLINGS": " ".join(f"{p}={r}" for p, r in beside.items()),
        "GBDEPLOY_BRANCH": settings.git.branch,
        "GBDEPLOY_WORKSPACE_TOML": _workspace_toml(submodule, list(beside)),
        "GBDEPLOY_ARTIFACT": artifact,
        "GBDEPLOY_BUILT": posixpath.normpath(component.artifact),
        "CARGO_TARGET_DIR": w.cargo_target_dir.replace("{component}", name),
        "SCCACHE_DIR": w.sccache_dir.replace("{component}", name),
        "CARGO_HOME": w.cargo_home.replace("{component}", name),
        "GBDEPLOY_LOGS_DIR": w.logs_dir.replace("{component}", name),
        "GBDEPLOY_TOOLCHAIN_PATH": w.toolchain_path,
        **NO_PROMPTS,
    }
    for key in ("cargo_target_dir", "sccache_dir", "cargo_home", "logs_dir", "source_dir"):
        value = getattr(w, key)
        _refuse_expressions(f"workflows.{key}", value)
        if not value.startswith("/"):
            raise ConfigError(f"workflows.{key}", f"must be an absolute path, got {value!r}")
    return "    env:\n" + _env(values, 6)


def _toolchain_script(needs_cargo: bool) -> str:
    """The runner daemon's PATH has no ~/.cargo/bin (no login profile): put the configured
    toolchain first, use sccache only from there (by full path), and say what was found."""
    cargo = (
        "if ! command -v cargo >/dev/null 2>&1; then\n"
        "  echo \"cargo is not on the runner's PATH ($PATH): install the Rust toolchain for the"
        " runner's user, or set workflows.toolchain_path to where cargo is\" >&2\n"
        "  exit 1\n"
        "fi\n"
        'echo "cargo: $(command -v cargo)"\n'
        if needs_cargo
        else ""
    )
    return (
        'toolchain="${GBDEPLOY_TOOLCHAIN_PATH//\\$HOME/$HOME}"\n'
        'export PATH="$toolchain:$PATH"\n'
        'sccache=""\n'
        'IFS=: read -r -a toolchain_dirs <<< "$toolchain"\n'
        'for dir in "${toolchain_dirs[@]}"; do\n'
        '  if [ -x "$dir/sccache" ]; then sccache="$dir/sccache"; break; fi\n'
        "done\n"
        'if [ -n "$sccache" ]; then\n'
        '  export RUSTC_WRAPPER="$sccache"\n'
        '  echo "sccache: $sccache (RUSTC_WRAPPER)"\n'
        "else\n"
        '  echo "sccache: not in $toolchain (workflows.toolchain_path): building without it"\n'
        "fi\n" + cargo
    )


# The component's tree (and its siblings') in the runner's persistent source directory, updated
# to this run's commit under a lock: git rewrites only the files that changed, so cargo's
# fingerprints (mtimes) of the rest hold and the build is incremental.
_SOURCES = r"""workspace="$PWD"
src="$GBDEPLOY_SOURCE_DIR"
if ! mkdir -p "$src"; then
  echo "cannot create the source directory $src (workflows.source_dir)" >&2
  exit 1
fi
exec 8>"$src/.gbdeploy.lock"
if ! flock -n 8; then
  echo "another job is building in $src: waiting for it"
  flock 8
fi
report() {  # label, tree, commit before (empty: none)
  local after changed
  after="$(git -C "$2" rev-parse HEAD)"
  if [ -z "$3" ]; then
    echo "$1: first checkout in $2 at ${after:0:12}: a full build"
  elif [ "$3" = "$after" ]; then
    echo "$1: $2 already at ${after:0:12}: an incremental build"
  else
    changed="$(git -C "$2" diff --name-only "$3" "$after" | wc -l)"
    echo "$1: $2 updated ${3:0:12} -> ${after:0:12} ($changed files): an incremental build"
  fi
}
prepare() {  # tree: prints the commit it holds, or nothing for a new one
  if [ -d "$1/.git" ]; then
    git -C "$1" rev-parse -q --verify HEAD || true
  else
    rm -rf "$1"
    mkdir -p "$1"
    git init -q "$1"
  fi
}
sync_tree() {  # label, checked-out repository, tree
  local before
  before="$(prepare "$3")"
  git -C "$3" fetch --quiet --no-tags "$2" HEAD
  git -C "$3" checkout --quiet --force --detach FETCH_HEAD
  git -C "$3" clean --quiet -ffd
  report "$1" "$3" "$before"
}
fetch_tree() {  # label, URL, branch, tree: from the forge, with the checkout token
  local before
  before="$(prepare "$4")"
  if ! GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader \
    GIT_CONFIG_VALUE_0="Authorization: token $GBDEPLOY_GIT_TOKEN" \
    git -C "$4" fetch --quiet --no-tags "$2" "$3"; then
    echo "cannot fetch $1 from $2 ($3): a private repository needs a token that may read it," \
      "in the secret named by workflows.submodules_secret" >&2
    exit 1
  fi
  git -C "$4" checkout --quiet --force --detach FETCH_HEAD
  git -C "$4" clean --quiet -ffd
  report "$1" "$4" "$before"
}
sync_tree "$GBDEPLOY_COMPONENT" "$workspace/$GBDEPLOY_BUILD_DIR" "$src/$GBDEPLOY_SUBMODULE"
for sibling in $GBDEPLOY_SIBLINGS; do
  path="${sibling%%=*}"
  if [ "$GBDEPLOY_BUILD_DIR" = "." ]; then
    fetch_tree "$path" "$GITHUB_SERVER_URL/${sibling#*=}.git" "$GBDEPLOY_BRANCH" "$src/$path"
  else
    sync_tree "$path" "$workspace/$path" "$src/$path"
  fi
done
unset GBDEPLOY_GIT_TOKEN
if [ -n "$GBDEPLOY_WORKSPACE_TOML" ] &&
  [ "$(cat "$src/Cargo.toml" 2>/dev/null)" != "$(printf '%s' "$GBDEPLOY_WORKSPACE_TOML")" ]; then
  printf '%s' "$GBDEPLOY_WORKSPACE_TOML" > "$src/Cargo.toml"
  echo "wrote the cargo workspace $src/Cargo.toml"
fi
cd "$src/$GBDEPLOY_SUBMODULE"
"""


def _build_script(component: Component) -> str:
    assert component.build is not None  # _checked
    in_target = posixpath.normpath(component.artifact).startswith("target/")
    # The artifact as the deploy step gets it: from CARGO_TARGET_DIR when cargo put it there.
    pick = (
        'found="$CARGO_TARGET_DIR/${GBDEPLOY_BUILT#target/}"\n'
        'if [ ! -f "$found" ]; then found="$PWD/$GBDEPLOY_BUILT"; fi\n'
        if in_target
        else 'found="$PWD/$GBDEPLOY_BUILT"\n'
    )
    return (
        _toolchain_script(bool(re.search(r"\bcargo\b", component.build)))
        + _SOURCES
        + 'BOTSERVER_COMMIT="$(git rev-parse --short HEAD)"\n'
        "export BOTSERVER_COMMIT\n"
        'if ! mkdir -p "$GBDEPLOY_LOGS_DIR"; then\n'
        '  echo "cannot create the build-log directory $GBDEPLOY_LOGS_DIR (workflows.logs_dir)"'
        " >&2\n"
        "  exit 1\n"
        "fi\n"
        'log="$GBDEPLOY_LOGS_DIR/$GBDEPLOY_COMPONENT-build-$(date -u +%Y%m%dT%H%M%SZ)'
        '-${GITHUB_RUN_NUMBER:-0}.log"\n'
        'echo "building $GBDEPLOY_COMPONENT in $PWD at commit $BOTSERVER_COMMIT"\n'
        'echo "build log: $log"\n'
        "(\n" + component.build.strip() + "\n"
        ') 2>&1 | tee "$log"\n' + pick + 'if [ ! -f "$found" ]; then\n'
        '  echo "the build did not produce $GBDEPLOY_ARTIFACT'
        ' (components.$GBDEPLOY_COMPONENT.artifact)" >&2\n'
        "  exit 1\n"
        "fi\n"
        "# a copy for the deploy step: the shared tree is another job's once the lock is gone\n"
        'copy="${RUNNER_TEMP:-$HOME}/gbdeploy-built/${found##*/}"\n'
        'mkdir -p "${copy%/*}"\n'
        'cp -p "$found" "$copy"\n'
        'printf \'%s\\n\' "$copy" > "${RUNNER_TEMP:-$HOME}/gbdeploy-artifact"\n'
        'echo "artifact: $found"\n'
    )


_PIP = '"$venv/bin/pip" install --quiet --no-input --disable-pip-version-check'


def _install_step(pin: Pin) -> str:
    """gbdeploy into a venv keyed by the lock and the pin: every distribution by hash from the
    lock (the wheel too, by default), then a VCS or file pin without dependencies. A VCS pin's
    repository is checked first with prompts off, so a 401 fails in seconds with its cause."""
    check = (
        '    if ! printf \'%s  %s\\n\' "$GBDEPLOY_INSTALL_SHA256" "$GBDEPLOY_INSTALL"'
        " | sha256sum --check --strict --quiet -; then\n"
        '      echo "$GBDEPLOY_INSTALL does not have the sha256 of workflows.install" >&2\n'
        "      exit 1\n"
        "    fi\n"
        if pin.kind == "file"
        else ""
    )
    reachable = (
        'url="$GBDEPLOY_INSTALL_URL"\n'
        'if ! said="$(timeout 60 git ls-remote "$url" 2>&1 >/dev/null | tail -n 1)"; then\n'
        '  echo "cannot read $url anonymously (git: $said). The job installs'
        " gbdeploy without the job token: make that repository readable without one, or leave"
        ' workflows.install empty to use the wheel that gbdeploy workflows writes" >&2\n'
        "  exit 1\n"
        "fi\n"
        if pin.kind == "vcs"
        else ""
    )
    then = (
        f"    {_PIP} --no-deps --no-build-isolation "
        + ('"./$GBDEPLOY_INSTALL"' if pin.kind == "file" else '"$GBDEPLOY_INSTALL"')
        + "\n"
        if pin.kind != "wheel"
        else ""
    )
    env = {"GBDEPLOY_INSTALL": pin.requirement, "GBDEPLOY_LOCK": LOCK_FILE}
    if pin.sha256:
        env["GBDEPLOY_INSTALL_SHA256"] = pin.sha256
    if pin.kind == "vcs":
        env["GBDEPLOY_INSTALL_URL"] = pin.url
    return (
        "      - name: Install gbdeploy (pinned)\n"
        "        env:\n"
        + _env(env, 10)
        + "        run: |\n"
        + _block(
            "if command -v gbdeploy >/dev/null 2>&1; then\n"
            '  echo "gbdeploy: $(command -v gbdeploy) (provided by the runner)"\n'
            f'  dirname "$(command -v gbdeploy)" > "{GBDEPLOY_BIN}"\n'
            "  exit 0\n"
            "fi\n"
            'if [ ! -f "$GBDEPLOY_LOCK" ]; then\n'
            '  echo "$GBDEPLOY_LOCK is missing: run gbdeploy workflows and commit'
            f' {INSTALL_DIR}/ with the workflows" >&2\n'
            "  exit 1\n"
            "fi\n"
            + reachable
            + 'key="$( { cat "$GBDEPLOY_LOCK"; printf \'%s\\n\' "$GBDEPLOY_INSTALL"; }'
            ' | sha256sum | cut -c1-16)"\n'
            f'venv="{VENV_ROOT}/venv-$key"\n'
            f'mkdir -p "{VENV_ROOT}"\n'
            "(\n"
            "  flock 9  # jobs of other components may install the same pin at the same time\n"
            '  if [ ! -e "$venv/.installed" ]; then\n'
            '    rm -rf "$venv"\n' + check + '    python3 -m venv "$venv"\n'
            f'    {_PIP} --require-hashes --only-binary :all: -r "$GBDEPLOY_LOCK"\n'
            + then
            + '    touch "$venv/.installed"\n'
            "  fi\n"
            ') 9>"$venv.lock"\n'
            f'printf \'%s\\n\' "$venv/bin" > "{GBDEPLOY_BIN}"\n'
            'echo "gbdeploy: $venv (from $GBDEPLOY_INSTALL)"\n',
            10,
        )
    )


def _ssh_step() -> str:
    return (
        "      - name: Write the deploy SSH key\n"
        "        env:\n"
        "          DEPLOY_SSH_KEY: ${{ secrets.DEPLOY_SSH_KEY }}\n"
        "          DEPLOY_KNOWN_HOSTS: ${{ secrets.DEPLOY_KNOWN_HOSTS }}\n"
        "        run: |\n"
        + _block(
            "umask 077\n"
            f'mkdir -p "{SSH_DIR}"\n'
            f'rm -f "{SSH_DIR}/deploy_key" "{SSH_DIR}/known_hosts"\n'
            'if [ -n "$DEPLOY_SSH_KEY" ]; then\n'
            f'  printf \'%s\\n\' "$DEPLOY_SSH_KEY" > "{SSH_DIR}/deploy_key"\n'
            '  echo "deploy key written"\n'
            "fi\n"
            'if [ -n "$DEPLOY_KNOWN_HOSTS" ]; then\n'
            f'  printf \'%s\\n\' "$DEPLOY_KNOWN_HOSTS" > "{SSH_DIR}/known_hosts"\n'
            '  echo "known_hosts written"\n'
            "fi\n",
            10,
        )
    )


def _deploy_step(name: str) -> str:
    return (
        f"      - name: {_yaml(f'Deploy {name}')}\n"
        "        env:\n"
        "          STRATEGY: ${{ inputs.strategy }}\n"
        "        run: |\n"
        + _block(
            f"trap 'rm -f \"{SSH_DIR}/deploy_key\"' EXIT\n"
            f'PATH="$(cat "{GBDEPLOY_BIN}"):$PATH"\n'
            "export PATH\n"
            f'if [ -s "{SSH_DIR}/deploy_key" ]; then\n'
            f'  export GBDEPLOY_SSH_IDENTITY_FILE="{SSH_DIR}/deploy_key"\n'
            "fi\n"
            f'if [ -s "{SSH_DIR}/known_hosts" ]; then\n'
            f'  export GBDEPLOY_SSH_KNOWN_HOSTS="{SSH_DIR}/known_hosts"\n'
            "fi\n"
            'COMMIT="$(git -C "$GBDEPLOY_BUILD_DIR" rev-parse HEAD)"\n'
            'artifact="$(cat "${RUNNER_TEMP:-$HOME}/gbdeploy-artifact")"\n'
            "# --yes: the step runs on a PTY with nobody to answer a question\n"
            'gbdeploy deploy "$GBDEPLOY_COMPONENT" --artifact "$artifact"'
            ' --commit "$COMMIT" --strategy "${STRATEGY:-staged}" --yes\n',
            10,
        )
    )


def _build_env(settings: Settings, component: Component, in_root: bool) -> str:
    """A component workflow fetches its siblings from the forge: with the token of
    `workflows.submodules_secret`, else the job's own (public repositories only)."""
    if in_root or not component.siblings:
        return ""
    secret = settings.workflows.submodules_secret
    token = f"${{{{ secrets.{secret} }}}}" if secret else "${{ forgejo.token }}"
    return f"        env:\n          GBDEPLOY_GIT_TOKEN: {token}\n"


def _checkout_steps(settings: Settings, component: Component, submodule: str) -> str:
    """The root repository, then only the submodules the build needs (the component's and its
    siblings', recursively), with the token the secret `workflows.submodules_secret` holds when
    set: the job token cannot read other private repositories. actions/checkout keeps the token
    in the clone's git config for the forge's host, so the submodule fetch uses it; no prompt
    either way."""
    secret = settings.workflows.submodules_secret
    token = f"          token: ${{{{ secrets.{secret} }}}}\n" if secret else ""
    return (
        "      - name: Check out\n"
        f"        uses: {CHECKOUT_ACTION}\n"
        + ("        with:\n" + token if token else "")
        + "      - name: Fetch the submodules the build needs\n"
        "        env:\n"
        + _env({"GBDEPLOY_FETCH": " ".join([submodule, *siblings(settings, component)])}, 10)
        + "        run: |\n"
        + _block(
            'read -r -a paths <<< "$GBDEPLOY_FETCH"\n'
            'if ! git submodule update --init --recursive -- "${paths[@]}"; then\n'
            '  echo "cannot fetch the submodules ${paths[*]}: a private repository needs a'
            ' token that may read it, in the secret named by workflows.submodules_secret" >&2\n'
            "  exit 1\n"
            "fi\n",
            10,
        )
    )


def render_workflow(settings: Settings, component: Component | str) -> str:
    """The workflow file (text) that builds and deploys `component` on the CI runner, for the
    repository its `workflow_repo` names."""
    if isinstance(component, str):
        component = settings.component(component)
    in_root = placement(settings, component) == "root"
    submodule, artifact = _checked(component, in_root)
    branch = settings.git.branch
    runs_on = settings.workflows.runs_on
    _refuse_expressions("git.branch", branch)
    _refuse_expressions("workflows.runs_on", runs_on)
    pin = pinned_install(settings)
    name = component.name
    options = "".join(f"          - {s}\n" for s in STRATEGIES)
    paths = f"    paths:\n      - {_yaml(submodule)}\n      - {_yaml(submodule + '/**')}\n"
    checkout = (
        _checkout_steps(settings, component, submodule)
        if in_root
        else (f"      - name: Check out\n        uses: {CHECKOUT_ACTION}\n")
    )
    build_dir = submodule if in_root else "."
    text = (
        HEADER + f"name: {_yaml(f'{name}: build and deploy')}\n"
        "\n"
        "on:\n"
        "  push:\n"
        "    branches:\n"
        f"      - {_yaml(branch)}\n" + (paths if in_root else "") + "  workflow_dispatch:\n"
        "    inputs:\n"
        "      strategy:\n"
        "        description: staged (upload, then swap) or seed (stop, copy, start)\n"
        "        required: false\n"
        "        default: staged\n"
        "        type: choice\n"
        "        options:\n"
        f"{options}"
        "\n"
        "# One deploy of a component at a time: a later run waits, a running deploy is never\n"
        "# cancelled (without `group`, `cancel-in-progress: false` would allow any number).\n"
        "concurrency:\n"
        f"  group: {_yaml(f'gbdeploy-deploy-{name}')}\n"
        "  cancel-in-progress: false\n"
        "\n"
        "jobs:\n"
        "  deploy:\n"
        f"    runs-on: {_yaml(runs_on)}\n"
        + _job_env(settings, component, build_dir, artifact, submodule)
        + "    defaults:\n"
        "      run:\n"
        "        shell: bash\n"
        "    steps:\n"
        + checkout
        + f"      - name: {_yaml(f'Build {name}')}\n"
        + _build_env(settings, component, in_root)
        + "        run: |\n"
        + _block(_build_script(component), 10)
        + _install_step(pin)
        + _ssh_step()
        + _deploy_step(name)
    )
    _refuse_exposures(text, f"components.{name}.build")
    return text


def render_maintenance_workflow(settings: Settings) -> str:
    """A daily job on the runner that trims the sccache and cargo caches (`gbdeploy maintain`)."""
    runs_on = settings.workflows.runs_on
    _refuse_expressions("workflows.runs_on", runs_on)
    pin = pinned_install(settings)
    return (
        HEADER + "name: runner maintenance\n"
        "\n"
        "on:\n"
        "  schedule:\n"
        f"    - cron: {_yaml(MAINTENANCE_CRON)}\n"
        "  workflow_dispatch:\n"
        "\n"
        "concurrency:\n"
        '  group: "gbdeploy-runner-maintenance"\n'
        "  cancel-in-progress: false\n"
        "\n"
        "jobs:\n"
        "  maintain:\n"
        f"    runs-on: {_yaml(runs_on)}\n"
        "    env:\n"
        + _env(
            {  # trim the caches the deploy jobs fill (workflows.*), not maintenance's defaults
                "GBDEPLOY_MAINTENANCE_SCCACHE_DIR": settings.workflows.sccache_dir,
                "GBDEPLOY_MAINTENANCE_CARGO_HOME": settings.workflows.cargo_home,
                **NO_PROMPTS,
            },
            6,
        )
        + "    defaults:\n"
        "      run:\n"
        "        shell: bash\n"
        "    steps:\n"
        "      - name: Check out (for gbdeploy.yaml)\n"
        f"        uses: {CHECKOUT_ACTION}\n"
        + _install_step(pin)
        + "      - name: Trim the sccache and cargo caches\n"
        "        run: |\n"
        + _block(f'PATH="$(cat "{GBDEPLOY_BIN}"):$PATH"\nexport PATH\ngbdeploy maintain\n', 10)
    )


# --- the secret check on a rendered workflow's own text ---------------------------------------
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


def _refuse_exposures(text: str, key: str) -> None:
    problems = secret_exposures(text)
    if problems:
        raise ConfigError(key, "the rendered workflow could print a secret: " + problems[0])


# --- writing the files --------------------------------------------------------------------------
def _workflow_filename(component: Component) -> str:
    filename = component.workflow or f"{component.name}.yaml"
    if "/" in filename or not filename.endswith((".yaml", ".yml")):
        raise ConfigError(
            f"components.{component.name}.workflow",
            f"must be a file name ending in .yaml or .yml, got {filename!r}",
        )
    return filename


def rendered_files(settings: Settings) -> dict[str, str]:
    """File name → text of every workflow of the root repository (`.forgejo/workflows/`)."""
    files: dict[str, str] = {}
    for component in settings.components.values():
        if placement(settings, component) != "root":
            continue
        filename = _workflow_filename(component)
        if filename in files or filename == MAINTENANCE_WORKFLOW:
            raise ConfigError(
                f"components.{component.name}.workflow", f"{filename!r} is used twice"
            )
        files[filename] = render_workflow(settings, component)
    files[MAINTENANCE_WORKFLOW] = render_maintenance_workflow(settings)
    return files


def component_files(settings: Settings) -> dict[str, dict[str, str]]:
    """Submodule path → {file name → text} of the workflows that live in a component's own
    repository (`workflow_repo: component` or another OWNER/REPO)."""
    files: dict[str, dict[str, str]] = {}
    for component in settings.components.values():
        if placement(settings, component) == "component":
            submodule, _ = _checked(component, False)
            files.setdefault(submodule, {})[_workflow_filename(component)] = render_workflow(
                settings, component
            )
    return files


def default_out_dir(settings: Settings, cwd: Path | None = None) -> Path:
    """`<root repo>/.forgejo/workflows`: root is the project dir, else the git toplevel of cwd."""
    if settings.project_dir is not None:
        return settings.project_dir / ".forgejo" / "workflows"
    where = cwd or Path.cwd()
    found = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise UsageError(
            f"{where} is not inside a git repository and no gbdeploy.yaml was found",
            hint="run from the root repository, or give the directory with --out",
        )
    return Path(found.stdout.strip()) / ".forgejo" / "workflows"


def _write(path: Path, text: str | bytes, reporter: Reporter) -> None:
    data = text.encode() if isinstance(text, str) else text
    before = path.read_bytes() if path.is_file() else None
    if before == data:
        reporter.say(f"unchanged {path}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    reporter.say(f"{'wrote' if before is None else 'updated'} {path}")


def _write_install_files(top: Path, pin: Pin, reporter: Reporter) -> None:
    """The lock (and by default the wheel) the install step reads, into the repository at `top`;
    wheels of an older render are removed."""
    files = install_files(with_wheel=pin.kind == "wheel")
    for stale in (top / INSTALL_DIR).glob("*.whl"):
        if f"{INSTALL_DIR}/{stale.name}" not in files:
            stale.unlink()
            reporter.say(f"removed {stale}")
    for relative, data in files.items():
        _write(top / relative, data, reporter)


def run_workflows(settings: Settings, reporter: Reporter, *, out: str | Path | None = None) -> None:
    """Write every rendered workflow and print each file and whether it changed: the root's into
    `out` (default `<root>/.forgejo/workflows`), a component's into its submodule's
    `.forgejo/workflows/` (under `out/<submodule>/` when `out` is given)."""
    files = rendered_files(settings)  # all rendered before anything is written
    elsewhere = component_files(settings)
    pin = pinned_install(settings)
    directory = Path(out) if out is not None else default_out_dir(settings)
    root = directory.parent.parent
    directory.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        _write(directory / filename, text, reporter)
    _write_install_files(directory.parent.parent, pin, reporter)
    reporter.say(
        f"commit them (and {INSTALL_DIR}/) in the root repository and push to make Forgejo use them"
    )
    config = next(
        (
            settings.project_dir / n
            for n in CONFIG_NAMES
            if settings.project_dir is not None and (settings.project_dir / n).is_file()
        ),
        None,
    )
    for submodule, texts in elsewhere.items():
        target = directory / submodule if out is not None else root / submodule
        for filename, text in texts.items():
            _write(target / ".forgejo" / "workflows" / filename, text, reporter)
        _write_install_files(target, pin, reporter)
        if config is not None:
            copy = target / config.name
            if not copy.is_file() or copy.read_bytes() != config.read_bytes():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(config, copy)
                reporter.say(f"copied {config} to {copy} (its deploy step reads it)")
        reporter.say(
            f"commit {target / '.forgejo'} (with {INSTALL_DIR}/) and "
            f"{config.name if config else 'gbdeploy.yaml'} in "
            f"the repository of submodule {submodule} (its push starts the run)"
        )
    if pin.kind == "wheel":
        reporter.say(
            f"gbdeploy is installed in the jobs from {LOCK_FILE}: {pin.why}, with every "
            "dependency pinned by sha256"
        )
    else:
        reporter.say(
            f"gbdeploy is installed in the jobs from {pin.requirement}"
            + (f" ({pin.why}: make sure that commit is pushed there)" if pin.why else "")
            + f", its dependencies from {LOCK_FILE} by sha256"
        )
        if pin.kind == "vcs":
            _check_reachable(pin, reporter)
    _say_forge_version(settings, reporter)


def _say_forge_version(settings: Settings, reporter: Reporter) -> None:
    """With a token configured (a forge this project talks to), ask which Forgejo it runs: the
    rendered concurrency group queues deploys only from v14. Silent when it cannot be asked."""
    if settings.forge.token is None:
        return
    try:
        with ForgeClient(settings.forge, retries=0, retry_budget=0.0) as client:
            notice = concurrency_notice(client.server_version())
    except GbdeployError:
        return
    if notice:
        reporter.say(f"note: {notice}")


def _check_reachable(pin: Pin, reporter: Reporter) -> None:
    """The job clones a VCS pin anonymously (pip gets no job token): say now when that fails."""
    found = subprocess.run(
        ["git", "ls-remote", pin.url, "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **NO_PROMPTS},
    )
    if found.returncode != 0:
        said = (found.stderr.strip().splitlines() or ["no message"])[-1]
        reporter.say(
            f"warning: {pin.url} cannot be read anonymously from here ({said}): the jobs will "
            "fail to install gbdeploy. Make it readable without a token, or leave "
            f"workflows.install and workflows.source empty to use the wheel in {INSTALL_DIR}/"
        )
