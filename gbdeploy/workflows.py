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
- gbdeploy installed from a pinned source no one else can publish to (`install_lock`: by
  default the wheel and hash lock `gbdeploy workflows` writes beside the workflows) into a venv
  keyed by the lock and pin, unless the runner already has `gbdeploy` on its PATH;
- every value from the configuration reaches the shell through `env:` (a JSON string, which is a
  YAML scalar) and is used as "$VARIABLE": nothing in a name, path or artifact is ever parsed as
  shell; only `build` is shell by design;
- the deploy key and known_hosts come from the secrets `DEPLOY_SSH_KEY`/`DEPLOY_KNOWN_HOSTS`
  through `env:`, are written under `$RUNNER_TEMP` with mode 0600 and removed when the deploy
  step ends; `workflow_secrets` checks the rendered text itself for any step that could print
  them, and rendering refuses a workflow that has one.

Steps run with `shell: bash` (`bash --noprofile --norc -eo pipefail`).
`gbdeploy_sandbox.runner` executes these exact `run:` steps in the demo sandbox.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import subprocess
import textwrap
from pathlib import Path

from .config import Component, Settings
from .config_layers import CONFIG_NAMES
from .deploy import STRATEGIES
from .errors import ConfigError, UsageError
from .forge.concurrency import forge_concurrency
from .forge.placement import WORKFLOW_DIR, placement_of
from .install_lock import INSTALL_DIR, LOCK_FILE, Pin, install_files, pinned_install
from .output import Reporter
from .workflow_build import build_script
from .workflow_secrets import refuse_exposures

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
HEADER = "# Rendered by `gbdeploy workflows`. Do not edit: change gbdeploy.yaml and render again.\n"


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


def _deploy_step(name: str, default: str = "staged") -> str:
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
            ' --commit "$COMMIT" --strategy "${STRATEGY:-' + default + '}" --yes\n',
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
    in_root = placement_of(settings, component) == "root"
    submodule, artifact = _checked(component, in_root)
    branch = settings.git.branch
    runs_on = settings.workflows.runs_on
    _refuse_expressions("git.branch", branch)
    _refuse_expressions("workflows.runs_on", runs_on)
    pin = pinned_install(settings)
    name = component.name
    # a switch component deploys only with `switch`, and only it does
    strategies = ["switch"] if component.switch else [s for s in STRATEGIES if s != "switch"]
    options = "".join(f"          - {s}\n" for s in strategies)
    described = (
        "switch (start beside on the idle port, switch Caddy, stop the old)"
        if component.switch
        else "staged (upload, then swap) or seed (stop, copy, start)"
    )
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
        f"        description: {described}\n"
        "        required: false\n"
        f"        default: {strategies[0]}\n"
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
        + _block(build_script(component), 10)
        + _install_step(pin)
        + _ssh_step()
        + _deploy_step(name, strategies[0])
    )
    refuse_exposures(text, f"components.{name}.build")
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
        "    env:\n" + _env(NO_PROMPTS, 6) + "    defaults:\n"
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
        if placement_of(settings, component) != "root":
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
        if placement_of(settings, component) == "component":
            submodule, _ = _checked(component, False)
            files.setdefault(submodule, {})[_workflow_filename(component)] = render_workflow(
                settings, component
            )
    return files


def default_out_dir(settings: Settings, cwd: Path | None = None) -> Path:
    """`<root repo>/.forgejo/workflows`: root is the project dir, else the git toplevel of cwd."""
    if settings.project_dir is not None:
        return settings.project_dir / WORKFLOW_DIR
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
    return Path(found.stdout.strip()) / WORKFLOW_DIR


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
    _write_install_files(root, pin, reporter)
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
            _write(target / WORKFLOW_DIR / filename, text, reporter)
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
    verdict = forge_concurrency(settings.forge)
    if verdict is not None and verdict.status == "fail":
        reporter.say(f"note: {verdict.message}")


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
