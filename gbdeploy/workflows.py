"""`gbdeploy workflows`: the Forgejo workflow files of the root repository.

One workflow per component, `.forgejo/workflows/<component.workflow>`, plus
`runner-maintenance.yaml`. A component's workflow runs on a push to `git.branch` that changes the
component's submodule (a pointer change is a change of the path `botserver`; `botserver/**` covers
a root repository that holds the code as a plain directory), and on `workflow_dispatch` with an
optional `strategy` input. Its job:

1. `actions/checkout@v4` with `submodules: recursive` (Forgejo resolves `actions/…` through its
   DEFAULT_ACTIONS_URL, code.forgejo.org by default, which mirrors actions/checkout). Every
   submodule is checked out because a component may build against its siblings (`../botlib`).
2. Build in the submodule directory with the component's `build` command. `CARGO_TARGET_DIR` is
   pinned to `<submodule>/target`, so `component.artifact` is always relative to the submodule
   directory, whether or not the root repository is a cargo workspace. `BOTSERVER_COMMIT` is the
   submodule's `git rev-parse --short HEAD`, the marker the binary embeds and `verify` looks for.
   When the runner has sccache, it is used through `RUSTC_WRAPPER`.
3. Install gbdeploy into `~/.cache/gbdeploy/venv` unless the runner already has it
   (`workflows.install` is the pip requirement).
4. Write the deploy SSH key and known_hosts from the secrets `DEPLOY_SSH_KEY` and
   `DEPLOY_KNOWN_HOSTS` (both optional: without them the runner's own ~/.ssh setup applies) to
   `~/.ssh/gbdeploy/`, mode 0600, never echoed. The secrets reach the shell through `env:`, so
   their values never appear in the script text.
5. `gbdeploy deploy COMPONENT --artifact <submodule>/<artifact> --commit <submodule sha>` from the
   root of the checkout, where gbdeploy.yaml is.

`runs-on` is `workflows.runs_on` (default `ubuntu-latest`, the label Forgejo/act runners register
by default; the production runner's labels are not known here, so set it to one of them).
Steps run with `shell: bash` (`bash --noprofile --norc -eo pipefail`), and nothing uses `set -x`.
`gbdeploy_sandbox.runner` executes these exact `run:` steps in the demo sandbox.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import subprocess
import textwrap
from pathlib import Path

from .config import Component, Settings
from .errors import ConfigError, UsageError
from .output import Reporter

CHECKOUT_ACTION = "actions/checkout@v4"
MAINTENANCE_WORKFLOW = "runner-maintenance.yaml"
MAINTENANCE_CRON = "17 3 * * *"
STRATEGIES = ("staged", "seed")
GBDEPLOY_VENV = "$HOME/.cache/gbdeploy/venv"
SSH_DIR = "$HOME/.ssh/gbdeploy"
HEADER = "# Rendered by `gbdeploy workflows`. Do not edit: change gbdeploy.yaml and render again.\n"


def _yaml(value: str) -> str:
    """A YAML scalar for `value` (a JSON string is a valid YAML double-quoted scalar)."""
    return json.dumps(value)


def _block(text: str, indent: int) -> str:
    """`text` as the body of a YAML literal block (`run: |`) at `indent` spaces."""
    return textwrap.indent(text.rstrip("\n") + "\n", " " * indent)


def _refuse_expressions(key: str, value: str) -> None:
    if "${{" in value:
        raise ConfigError(key, "must not contain `${{`: it would be evaluated by the runner")


def _checked(component: Component) -> tuple[str, str]:
    """The component's submodule path and its artifact path relative to the checkout root."""
    key = f"components.{component.name}"
    submodule = component.submodule.strip("/")
    parts = submodule.split("/") if submodule else []
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise ConfigError(
            f"{key}.submodule", f"must be a path inside the root repository, got {submodule!r}"
        )
    if not component.build:
        raise ConfigError(f"{key}.build", "is required to render its workflow (the build command)")
    if not component.artifact or component.artifact.startswith("/"):
        raise ConfigError(
            f"{key}.artifact",
            f"must be a path relative to the submodule directory, got {component.artifact!r}",
        )
    for name in ("submodule", "artifact", "build", "workflow"):
        _refuse_expressions(f"{key}.{name}", getattr(component, name))
    artifact = posixpath.normpath(posixpath.join(submodule, component.artifact))
    if not artifact.startswith(submodule + "/"):
        raise ConfigError(f"{key}.artifact", f"must stay inside {submodule}/, got {artifact!r}")
    return submodule, artifact


def _install_step() -> str:
    return "      - name: Install gbdeploy\n        run: |\n" + _block(
        f'export PATH="$PATH:{GBDEPLOY_VENV}/bin"\n'
        "if command -v gbdeploy >/dev/null 2>&1; then\n"
        '  echo "gbdeploy: $(command -v gbdeploy)"\n'
        "  exit 0\n"
        "fi\n"
        f'python3 -m venv "{GBDEPLOY_VENV}"\n'
        f'"{GBDEPLOY_VENV}/bin/pip" install --quiet --disable-pip-version-check '
        '"$GBDEPLOY_INSTALL"\n',
        10,
    )


def render_workflow(settings: Settings, component: Component | str) -> str:
    """The workflow file (text) that builds and deploys `component` on the CI runner."""
    if isinstance(component, str):
        component = settings.component(component)
    submodule, artifact = _checked(component)
    assert component.build is not None  # _checked
    branch = settings.git.branch
    runs_on = settings.workflows.runs_on
    install = settings.workflows.install
    _refuse_expressions("git.branch", branch)
    _refuse_expressions("workflows.runs_on", runs_on)
    _refuse_expressions("workflows.install", install)
    name = component.name
    q_sub = shlex.quote(submodule)
    q_artifact_in_sub = shlex.quote(component.artifact)
    build = (
        "if command -v sccache >/dev/null 2>&1; then export RUSTC_WRAPPER=sccache; fi\n"
        'BOTSERVER_COMMIT="$(git rev-parse --short HEAD)"\n'
        "export BOTSERVER_COMMIT\n"
        'export CARGO_TARGET_DIR="$PWD/target"\n'
        f'echo "building {name} at {submodule} commit $BOTSERVER_COMMIT"\n'
        f"{component.build.strip()}\n"
        f"if [ ! -f {q_artifact_in_sub} ]; then\n"
        f'  echo "the build did not produce {artifact} (components.{name}.artifact)" >&2\n'
        "  exit 1\n"
        "fi\n"
    )
    ssh = (
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
        "fi\n"
    )
    deploy = (
        f'export PATH="$PATH:{GBDEPLOY_VENV}/bin"\n'
        f'if [ -s "{SSH_DIR}/deploy_key" ]; then\n'
        f'  export GBDEPLOY_SSH_IDENTITY_FILE="{SSH_DIR}/deploy_key"\n'
        "fi\n"
        f'if [ -s "{SSH_DIR}/known_hosts" ]; then\n'
        f'  export GBDEPLOY_SSH_KNOWN_HOSTS="{SSH_DIR}/known_hosts"\n'
        "fi\n"
        f'COMMIT="$(git -C {q_sub} rev-parse HEAD)"\n'
        f"gbdeploy deploy {shlex.quote(name)} --artifact {shlex.quote(artifact)}"
        ' --commit "$COMMIT" --strategy "${STRATEGY:-staged}"\n'
    )
    options = "".join(f"          - {s}\n" for s in STRATEGIES)
    return (
        HEADER + f"name: {_yaml(f'{name}: build and deploy')}\n"
        "\n"
        "on:\n"
        "  push:\n"
        "    branches:\n"
        f"      - {_yaml(branch)}\n"
        "    paths:\n"
        f"      - {_yaml(submodule)}\n"
        f"      - {_yaml(submodule + '/**')}\n"
        "  workflow_dispatch:\n"
        "    inputs:\n"
        "      strategy:\n"
        "        description: staged (upload, then swap) or seed (stop, copy, start)\n"
        "        required: false\n"
        "        default: staged\n"
        "        type: choice\n"
        "        options:\n"
        f"{options}"
        "\n"
        "env:\n"
        f"  GBDEPLOY_INSTALL: {_yaml(install)}\n"
        "\n"
        "jobs:\n"
        "  deploy:\n"
        f"    runs-on: {_yaml(runs_on)}\n"
        "    defaults:\n"
        "      run:\n"
        "        shell: bash\n"
        "    steps:\n"
        "      - name: Check out with submodules\n"
        f"        uses: {CHECKOUT_ACTION}\n"
        "        with:\n"
        "          submodules: recursive\n"
        f"      - name: {_yaml(f'Build {name}')}\n"
        f"        working-directory: {_yaml(submodule)}\n"
        "        run: |\n"
        + _block(build, 10)
        + _install_step()
        + "      - name: Write the deploy SSH key\n"
        "        env:\n"
        "          DEPLOY_SSH_KEY: ${{ secrets.DEPLOY_SSH_KEY }}\n"
        "          DEPLOY_KNOWN_HOSTS: ${{ secrets.DEPLOY_KNOWN_HOSTS }}\n"
        "        run: |\n" + _block(ssh, 10) + f"      - name: {_yaml(f'Deploy {name}')}\n"
        "        env:\n"
        "          STRATEGY: ${{ inputs.strategy }}\n"
        "        run: |\n" + _block(deploy, 10)
    )


def render_maintenance_workflow(settings: Settings) -> str:
    """A daily job on the runner that trims the sccache and cargo caches (`gbdeploy maintain`)."""
    runs_on = settings.workflows.runs_on
    install = settings.workflows.install
    _refuse_expressions("workflows.runs_on", runs_on)
    _refuse_expressions("workflows.install", install)
    return (
        HEADER + "name: runner maintenance\n"
        "\n"
        "on:\n"
        "  schedule:\n"
        f"    - cron: {_yaml(MAINTENANCE_CRON)}\n"
        "  workflow_dispatch:\n"
        "\n"
        "env:\n"
        f"  GBDEPLOY_INSTALL: {_yaml(install)}\n"
        "\n"
        "jobs:\n"
        "  maintain:\n"
        f"    runs-on: {_yaml(runs_on)}\n"
        "    defaults:\n"
        "      run:\n"
        "        shell: bash\n"
        "    steps:\n"
        "      - name: Check out (for gbdeploy.yaml)\n"
        f"        uses: {CHECKOUT_ACTION}\n"
        + _install_step()
        + "      - name: Trim the sccache and cargo caches\n"
        "        run: |\n"
        + _block(f'export PATH="$PATH:{GBDEPLOY_VENV}/bin"\ngbdeploy maintain\n', 10)
    )


def rendered_files(settings: Settings) -> dict[str, str]:
    """File name → text of every workflow `gbdeploy workflows` writes."""
    files: dict[str, str] = {}
    for component in settings.components.values():
        filename = component.workflow or f"{component.name}.yaml"
        if "/" in filename or not filename.endswith((".yaml", ".yml")):
            raise ConfigError(
                f"components.{component.name}.workflow",
                f"must be a file name ending in .yaml or .yml, got {filename!r}",
            )
        if filename in files or filename == MAINTENANCE_WORKFLOW:
            raise ConfigError(
                f"components.{component.name}.workflow", f"{filename!r} is used twice"
            )
        files[filename] = render_workflow(settings, component)
    files[MAINTENANCE_WORKFLOW] = render_maintenance_workflow(settings)
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


def run_workflows(settings: Settings, reporter: Reporter, *, out: str | Path | None = None) -> None:
    """Write every rendered workflow into `out` and print each file and whether it changed."""
    files = rendered_files(settings)  # all rendered before anything is written
    directory = Path(out) if out is not None else default_out_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        path = directory / filename
        before = path.read_text() if path.is_file() else None
        if before == text:
            reporter.say(f"unchanged {path}")
            continue
        path.write_text(text)
        reporter.say(f"{'wrote' if before is None else 'updated'} {path}")
    reporter.say("commit them in the root repository and push to make Forgejo use them")
