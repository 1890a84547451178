"""A General Bots-like git world in a directory: bare remotes, a root repo with a submodule, and a
developer's working clone. Used by the tests and by the demo sandbox.

    <base>/remotes/origin/gb.git        <base>/remotes/origin/botserver.git
    <base>/remotes/alm/gb.git           <base>/remotes/alm/botserver.git
    <base>/work/gb                      clone of origin/gb.git, remotes `origin` and `alm`
    <base>/work/gb/botserver            the submodule (url `../botserver.git`, no `branch =`),
                                        detached HEAD as `git submodule update` leaves it,
                                        remotes `origin` and `alm` pointing at botserver.git

Every git command here runs without the system or global git config, so the world is the same on
every machine; identities are set in each repository's own config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REMOTES = ("origin", "alm")
ROOT_REPO = "gb"
USER_NAME = "gbdeploy test"
USER_EMAIL = "gbdeploy-test@example.invalid"


def isolated_git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment in which git reads no system or global config and never prompts."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }
    )
    return env


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` (isolated from the user's config); its stdout, stripped."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=isolated_git_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} (in {cwd}) exited {result.returncode}:\n{result.stderr}"
        )
    return result.stdout.strip()


def _set_identity(repo: Path) -> None:
    git(repo, "config", "user.name", USER_NAME)
    git(repo, "config", "user.email", USER_EMAIL)
    git(repo, "config", "protocol.file.allow", "always")


@dataclass(frozen=True)
class GitWorld:
    base: Path
    submodule_name: str = "botserver"
    branch: str = "main"

    # --- where things are ---------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The developer's working clone of the root repo."""
        return self.base / "work" / ROOT_REPO

    @property
    def submodule(self) -> Path:
        """The submodule's working tree inside the clone."""
        return self.root / self.submodule_name

    def bare(self, remote: str, repo: str) -> Path:
        """A bare remote repository, e.g. `bare("alm", "gb")` or `bare("origin", "botserver")`."""
        return self.base / "remotes" / remote / f"{repo}.git"

    # --- building -----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        base: Path,
        *,
        submodule_name: str = "botserver",
        branch: str = "main",
        submodule_files: Mapping[str, str] | None = None,
    ) -> GitWorld:
        """Make the world; `submodule_files` (name → text) go into the submodule's first commit."""
        world = cls(Path(base), submodule_name, branch)
        world._build(submodule_files or {})
        return world

    def _build(self, submodule_files: Mapping[str, str]) -> None:
        for remote in REMOTES:
            for repo in (ROOT_REPO, self.submodule_name):
                path = self.bare(remote, repo)
                path.mkdir(parents=True)
                git(path, "init", "--quiet", "--bare", "-b", self.branch)

        seed = self.base / "seed"
        sub_seed = seed / self.submodule_name
        sub_seed.mkdir(parents=True)
        git(sub_seed, "init", "--quiet", "-b", self.branch)
        _set_identity(sub_seed)
        (sub_seed / "Cargo.toml").write_text(f'[package]\nname = "{self.submodule_name}"\n')
        (sub_seed / "src").mkdir()
        (sub_seed / "src" / "main.rs").write_text('fn main() { println!("hello"); }\n')
        for name, text in submodule_files.items():
            (sub_seed / name).write_text(text)
        git(sub_seed, "add", ".")
        git(sub_seed, "commit", "--quiet", "-m", f"Initial {self.submodule_name}")
        for remote in REMOTES:
            git(
                sub_seed,
                "push",
                "--quiet",
                str(self.bare(remote, self.submodule_name)),
                self.branch,
            )

        root_seed = seed / ROOT_REPO
        root_seed.mkdir()
        git(root_seed, "init", "--quiet", "-b", self.branch)
        _set_identity(root_seed)
        # A relative submodule url resolves against the superproject's `origin`, as in real gb.
        git(root_seed, "remote", "add", "origin", str(self.bare("origin", ROOT_REPO)))
        (root_seed / "README.md").write_text("General Bots (test world)\n")
        git(root_seed, "add", "README.md")
        git(
            root_seed,
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "--quiet",
            f"../{self.submodule_name}.git",
            self.submodule_name,
        )
        git(root_seed, "commit", "--quiet", "-m", "Initial root with submodule")
        for remote in REMOTES:
            git(root_seed, "push", "--quiet", str(self.bare(remote, ROOT_REPO)), self.branch)
        shutil.rmtree(seed)

        self.root.parent.mkdir(parents=True)
        git(
            self.root.parent,
            "-c",
            "protocol.file.allow=always",
            "clone",
            "--quiet",
            "--recurse-submodules",
            str(self.bare("origin", ROOT_REPO)),
            self.root.name,
        )
        _set_identity(self.root)
        git(self.root, "remote", "add", "alm", str(self.bare("alm", ROOT_REPO)))
        git(self.root, "fetch", "--quiet", "alm")
        _set_identity(self.submodule)
        git(self.submodule, "remote", "add", "alm", str(self.bare("alm", self.submodule_name)))
        git(self.submodule, "fetch", "--quiet", "alm")

    # --- changing things ----------------------------------------------------------------

    def switch_submodule_to_branch(self) -> None:
        """What a developer does before working: leave the detached HEAD for the branch."""
        git(self.submodule, "switch", "--quiet", self.branch)

    def commit_in_submodule(
        self,
        message: str = "Change botserver",
        *,
        on_branch: bool = True,
        filename: str = "CHANGES",
    ) -> str:
        """Append a line to `filename` in the submodule and commit it; the new commit's SHA.
        With `on_branch`, switch to the branch first (a detached HEAD stays detached otherwise)."""
        if on_branch:
            self.switch_submodule_to_branch()
        path = self.submodule / filename
        with path.open("a") as file:
            file.write(f"{message}\n")
        git(self.submodule, "add", filename)
        git(self.submodule, "commit", "--quiet", "-m", message)
        return git(self.submodule, "rev-parse", "HEAD")

    def commit_in_bare(self, remote: str, repo: str, message: str = "Someone else's change") -> str:
        """A commit that lands on a bare remote's branch from elsewhere (another developer), so
        the working clone is behind it. The new tip's SHA."""
        other = self.base / "others" / f"{remote}-{repo}"
        if other.exists():
            shutil.rmtree(other)
        other.parent.mkdir(parents=True, exist_ok=True)
        git(other.parent, "clone", "--quiet", str(self.bare(remote, repo)), other.name)
        _set_identity(other)
        with (other / "OTHER").open("a") as file:
            file.write(f"{message}\n")
        git(other, "add", "OTHER")
        git(other, "commit", "--quiet", "-m", message)
        git(other, "push", "--quiet", "origin", self.branch)
        return git(other, "rev-parse", "HEAD")

    def write_root_file(
        self, name: str, text: str, *, commit: bool = True, push: bool = True
    ) -> None:
        """Write a file in the root clone; optionally commit it and push to both remotes."""
        (self.root / name).write_text(text)
        if commit:
            git(self.root, "add", name)
            git(self.root, "commit", "--quiet", "-m", f"Add {name}")
            if push:
                for remote in REMOTES:
                    git(self.root, "push", "--quiet", remote, self.branch)

    def write_config(self, text: str) -> Path:
        """gbdeploy.yaml in the root repo, committed and pushed (so the root stays clean)."""
        self.write_root_file("gbdeploy.yaml", text)
        return self.root / "gbdeploy.yaml"

    def reject_pushes(self, remote: str, repo: str, reason: str = "pushes are frozen") -> None:
        """Install a pre-receive hook on a bare remote that refuses every push with `reason`."""
        hook = self.bare(remote, repo) / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\necho 'rejected: {reason}' >&2\nexit 1\n")
        hook.chmod(0o755)

    def accept_pushes(self, remote: str, repo: str) -> None:
        """Remove the hook installed by `reject_pushes`."""
        (self.bare(remote, repo) / "hooks" / "pre-receive").unlink(missing_ok=True)

    # --- reading things -----------------------------------------------------------------

    def ref(self, remote: str, repo: str, ref: str | None = None) -> str | None:
        """The SHA a bare remote's ref points at (default: the branch), or None if it is absent."""
        name = ref or f"refs/heads/{self.branch}"
        try:
            return git(self.bare(remote, repo), "rev-parse", "--verify", "--quiet", name)
        except RuntimeError:
            return None

    def refs(self) -> dict[str, str]:
        """Every ref of every repository in the world (bare remotes and working clones), for
        asserting that nothing changed."""
        snapshot: dict[str, str] = {}
        places = {
            f"{remote}/{repo}": self.bare(remote, repo)
            for remote in REMOTES
            for repo in (ROOT_REPO, self.submodule_name)
        }
        places["work/root"] = self.root
        places["work/submodule"] = self.submodule
        for label, path in places.items():
            for line in git(path, "for-each-ref", "--format=%(refname) %(objectname)").splitlines():
                name, sha = line.split()
                snapshot[f"{label}:{name}"] = sha
            if label.startswith("work/"):
                snapshot[f"{label}:HEAD"] = git(path, "rev-parse", "HEAD")
        return snapshot

    def pointer(self, remote: str, commit: str | None = None) -> str:
        """The submodule commit recorded in a root commit on a bare remote (default: its tip)."""
        tree = git(
            self.bare(remote, ROOT_REPO), "ls-tree", commit or self.branch, self.submodule_name
        )
        mode, kind, sha = tree.split("\t")[0].split()
        assert (mode, kind) == ("160000", "commit"), tree
        return sha

    def message(self, remote: str, repo: str, commit: str | None = None) -> str:
        """The full message of a commit on a bare remote (default: the branch tip)."""
        return git(self.bare(remote, repo), "log", "-1", "--format=%B", commit or self.branch)

    def count(self, remote: str, repo: str) -> int:
        """How many commits the bare remote's branch has."""
        return int(git(self.bare(remote, repo), "rev-list", "--count", self.branch))
