"""The build step of a rendered workflow: its bash script (the toolchain on PATH, the component's
persistent source tree updated under a lock, the build with its log, the artifact copied out)."""

from __future__ import annotations

import posixpath
import re

from .config import Component


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


def build_script(component: Component) -> str:
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
