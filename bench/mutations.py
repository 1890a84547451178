"""Deliberate breaks of gbdeploy's promises, and whether the test suite notices each one.

    python bench/mutations.py [--only NAME[,NAME…]] [--list]

Each mutation replaces one exact piece of text in one file of a throw-away copy of this checkout,
then runs the tests named for it in that copy. The text must occur exactly once: a break whose
text is gone (the source changed) is reported STALE, never counted as caught. The tests first run
on the unbroken copy and must pass there (BASELINE otherwise); a mutation is *caught* when at least
one of them then fails. Each line says caught, SURVIVED, STALE or BASELINE; the script exits 1
unless every break chosen was caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


P = "tests/test_promises.py::"
H = "tests/test_deploy_holds.py::"

MUTATIONS: tuple[Mutation, ...] = (
    # --- deploy ---------------------------------------------------------------------------------
    Mutation(
        "skip-upload-check",
        "the upload's sha256 is compared with the artifact's before the swap",
        "gbdeploy/deploy/deployment.py",
        "if got != self.sha256:",
        "if False:",
        ("tests/test_deploy_faults.py::test_a_damaged_upload_is_caught_before_the_swap",),
    ),
    Mutation(
        "stop-by-pattern",
        "the stop matches the exact executable, never by pattern (which hits bystanders)",
        "gbdeploy/remote/far_end/procs.sh",
        "targets=$(pids)",
        'targets=$(pgrep -f "$b" | tr "\\n" " ")',
        ("tests/test_service.py::test_stop_terms_the_binary_and_spares_everything_else",),
    ),
    Mutation(
        "preflight-ignored",
        "a failed target preflight stops the deploy before anything is stopped",
        "gbdeploy/remote/far_end/steps.sh",
        'if [ "$bad" != 0 ]; then',
        "if false; then",
        ("tests/test_deploy_faults.py::test_a_config_mistake_is_refused_before_anything_stops",),
    ),
    Mutation(
        "lock-not-atomic",
        "the lock is taken atomically: of two deploys at one instant, one holds it",
        "gbdeploy/remote/far_end/steps.sh",
        'if ! mv -T -- "$T" "$L" 2>/dev/null; then rm -rf -- "$T"\n',
        'if ! { mkdir -p -- "$L" && mv -f -- "$T/holder" "$L/holder"; } 2>/dev/null;'
        ' then rm -rf -- "$T"\n',
        (P + "test_two_deploys_racing_for_the_lock_never_both_hold_it",),
    ),
    Mutation(
        "stop-timeout-ignored",
        "the stop waits stop_timeout between TERM and KILL",
        "gbdeploy/deploy/service.py",
        "{looks(timeout)}",
        "{looks(1.0)}",
        (P + "test_the_stop_gives_the_service_its_stop_timeout_to_exit_gracefully",),
    ),
    Mutation(
        "script-undo-skipped",
        "the service script puts the old binary back itself when a step in it fails",
        "gbdeploy/remote/far_end/steps.sh",
        'phase "undoing"; if restore; then echo restored;',
        'phase "undoing"; if true; then echo restored;',
        (P + "test_the_service_script_undoes_itself_when_its_deploy_was_killed",),
    ),
    Mutation(
        "chown-failure-ignored",
        "a failed chown inside the service script is a failure that undoes the deploy",
        "gbdeploy/remote/far_end/steps.sh",
        'chmod 0755 -- "$B"; } || failed "chown"',
        'chmod 0755 -- "$B"; } || true',
        (P + "test_the_service_script_undoes_itself_when_its_deploy_was_killed",),
    ),
    Mutation(
        "swap-failure-ignored",
        "a failed swap inside the service script is a failure that undoes the deploy",
        "gbdeploy/remote/far_end/steps.sh",
        'rename_over "$N" "$B" || failed "swap"',
        'rename_over "$N" "$B" || true',
        (P + "test_a_failure_inside_the_service_script_restarts_the_old_binary",),
    ),
    Mutation(
        "recover-to-the-oldest",
        "--recover puts back the newest healthy release",
        "gbdeploy/deploy/rollback.py",
        "release = facts.releases[-1] if facts.releases else None",
        "release = facts.releases[0] if facts.releases else None",
        (P + "test_recover_after_a_killed_deploy_puts_back_the_newest_healthy_release",),
    ),
    Mutation(
        "rollback-reorders-releases",
        "a rollback keeps the newer releases where they are, so `rollback --to` can roll forward",
        "gbdeploy/deploy/deployment.py",
        'if result in ("ok", "unchanged") and self.sha256 and self.release is None:',
        'if result in ("ok", "unchanged") and self.sha256:',
        ("tests/test_deploy.py::test_rollback_to_a_commit_keeps_the_newer_ones_and_rolls_forward",),
    ),
    Mutation(
        "journal-left-after-success",
        "a deploy that ends cleanly leaves no journal",
        "gbdeploy/deploy/layout.py",
        'else ["end_journal"]',
        'else [":"]',
        (P + "test_a_successful_deploy_leaves_no_journal",),
    ),
    Mutation(
        "machine-check-unwired",
        "deploy refuses an artifact built for another machine than the target's",
        "gbdeploy/deploy/command.py",
        "plan = deployment_plan(deployment, local, machine_of=machine_of)",
        "plan = deployment_plan(deployment, local, machine_of=None)",
        (P + "test_an_artifact_for_another_machine_is_refused_by_deploy",),
    ),
    Mutation(
        "releases-kept-one-too-many",
        "the target keeps exactly keep_releases healthy releases",
        "gbdeploy/remote/far_end/steps.sh",
        'tail -n "$3" --',
        'tail -n "$(($3 + 1))" --',
        ("tests/test_deploy.py::test_kept_releases_are_pruned_to_keep_releases",),
    ),
    Mutation(
        "rollback-unasked",
        "rollback asks before it acts, from a terminal",
        "gbdeploy/tasks.py",
        'confirm_change=lambda change: confirm(f"{change}?", yes=yes),',
        "confirm_change=None,",
        (P + "test_rollback_from_a_terminal_asks_and_a_no_changes_nothing",),
    ),
    Mutation(
        "stop-kills-at-once",
        "the stop asks first (SIGTERM) and kills only a service that did not exit in time",
        "gbdeploy/remote/far_end/procs.sh",
        "kill -TERM $targets 2>/dev/null",
        "kill -KILL $targets 2>/dev/null",
        (P + "test_the_stop_gives_the_service_its_stop_timeout_to_exit_gracefully",),
    ),
    Mutation(
        "previous-binary-not-kept",
        "the binary that ran before is kept (B.prev) so a failure can put it back",
        "gbdeploy/remote/far_end/steps.sh",
        'same_bytes "$B" "$P" || { echo "cannot keep $B as $P" >&2; exit 1; }',
        ': || { echo "cannot keep $B as $P" >&2; exit 1; }',
        ("tests/test_deploy.py::test_binary_that_fails_to_start_is_rolled_back",),
    ),
    Mutation(
        "started-as-the-ssh-user",
        "the service starts as its user (run_as), never as the ssh user (root)",
        "gbdeploy/deploy/service.py",
        "if not component.run_as or ssh_user == component.user:",
        "if True:",
        ("tests/test_deploy.py::test_deploy_replaces_the_running_process",),
    ),
    Mutation(
        "failed-upload-left-behind",
        "a failed upload leaves no partial B.new on the target",
        "gbdeploy/deploy/layout.py",
        'return f"rm -f -- {quote(paths.new)}"',
        'return f": {quote(paths.new)}"',
        ("tests/test_deploy_faults.py::test_a_damaged_upload_is_caught_before_the_swap",),
    ),
    Mutation(
        "seed-uploads-before-the-stop",
        "strategy seed stops the service before the upload (the operations guide's order)",
        "gbdeploy/deploy/command.py",
        "return [begin, stop, upload, start, health, finish]",
        "return [begin, upload, stop, start, health, finish]",
        ("tests/test_deploy.py::test_dry_run_does_not_connect",),
    ),
    Mutation(
        "short-upload-kept",
        "the target refuses a stream shorter than the size announced",
        "gbdeploy/remote/far_end/helper.py",
        "if got != size:",
        "if False:",
        ("tests/test_transfer.py::test_a_short_stream_is_refused_and_its_file_removed",),
    ),
    Mutation(
        "stale-sha-sidecar-trusted",
        "the remembered sha256 is trusted only while the binary's size, mtime and inode match",
        "gbdeploy/remote/far_end/lib.sh",
        '[ -f "$S" ] && [ "$(cut -d" " -f2- "$S")" = "$(stat_of "$B")" ] && cut -d" " -f1 "$S"',
        '[ -f "$S" ] && cut -d" " -f1 "$S"',
        (P + "test_a_binary_replaced_by_hand_is_not_taken_for_the_one_deployed",),
    ),
    Mutation(
        "history-oldest-first",
        "history lists the newest deploy first",
        "gbdeploy/history.py",
        "    entries.reverse()\n",
        "",
        ("tests/test_history.py",),
    ),
    Mutation(
        "restore-starts-a-stopped-service",
        "after a failure, the previous binary is started again only if it was running before",
        "gbdeploy/remote/far_end/lib.sh",
        '  if [ "$up" = 1 ]; then\n    if [ -f "$G" ]; then launch',
        '  if true; then\n    if [ -f "$G" ]; then launch',
        (P + "test_a_failed_deploy_to_a_stopped_service_puts_the_binary_back_and_starts_nothing",),
    ),
    Mutation(
        "skipped-steps-undone",
        # The undo of a skipped service step acts on the target's journal, which says the service
        # was never touched: undoing it is harmless by design; running it is what must not happen.
        "an unchanged binary whose service is down stays in place (a skipped step never runs)",
        "gbdeploy/deploy/engine.py",
        "                    continue  # not begun: nothing to undo",
        "                    pass  # (broken: the skipped step runs, and is undone)",
        (P + "test_an_unchanged_binary_whose_service_is_down_is_left_in_place",),
    ),
    Mutation(
        "recover-stuck-on-an-empty-lock",
        "--recover takes over a lock left without a holder record",
        "gbdeploy/deploy/rollback.py",
        "if facts.held_age is not None and not deployment.steal:",
        "if False:",
        (P + "test_recover_takes_over_a_lock_left_without_a_holder_record",),
    ),
    Mutation(
        "env-value-unquoted",
        "a component's environment values reach the service as data, never as shell code",
        "gbdeploy/deploy/service.py",
        'f"{name}={quote(value)}" for name, value in component.env.items()',
        'f"{name}={value}" for name, value in component.env.items()',
        (P + "test_environment_values_reach_the_service_as_they_are_never_run",),
    ),
    Mutation(
        "exit-5-reported-as-1",
        "a failure that could not restore the previous state exits 5, not 1",
        "gbdeploy/tasks.py",
        'redact(f"gbdeploy: error: {error}", *secrets), code=error.exit_code',
        'redact(f"gbdeploy: error: {error}", *secrets), code=min(error.exit_code, 2)',
        (P + "test_the_gbdeploy_process_exits_5_when_the_previous_state_could_not_be_restored",),
    ),
    Mutation(
        "status-hides-the-lock",
        "status shows a held lock, by whom, and what the interrupted deploy left",
        "gbdeploy/deploy/status.py",
        "    if status.lock:\n        lock = status.lock",
        "    if False:\n        lock = status.lock",
        (P + "test_a_deploy_killed_with_the_service_stopped_is_described_then_recovered",),
    ),
    Mutation(
        "logs-ignore-the-count",
        "`logs -n N` shows the last N lines",
        "gbdeploy/logs.py",
        '_call("tail", "-n", int(lines), "--", path)',
        '_call("tail", "-n", int(lines) + 10, "--", path)',
        ("tests/test_logs.py",),
    ),
    # --- switch ---------------------------------------------------------------------------------
    Mutation(
        "switch-stops-old-by-path",
        "a switch stops the old process by its pid: by path it would stop the new one too",
        "gbdeploy/remote/far_end/steps.sh",
        'for p in "$@"; do stop_pid "$p" "$looks" || rc=1; done',
        'stop_by_path 1 "$looks" 100 || rc=1',
        (
            "tests/test_switch_deploy.py::test_two_switches_there_and_back_under_load_fail_no_request",
        ),
    ),
    Mutation(
        "switch-undo-leaves-the-new-running",
        "a failed switch stops the process it started beside the old one",
        "gbdeploy/remote/far_end/steps.sh",
        'if ! { stop_all_but "$2" $before && switch_unplace; }; then',
        "if ! { switch_unplace; }; then",
        ("tests/test_switch_deploy.py::test_a_failure_leaves_traffic_where_it_was",),
    ),
    Mutation(
        "switch-caddyfile-not-put-back",
        "a switch whose confirmation fails puts the Caddyfile's backup back",
        "gbdeploy/deploy/switch.py",
        "                caddy_switch.undo(self.proxy_session)\n",
        "                pass\n",
        ("tests/test_switch_deploy.py::test_a_failure_leaves_traffic_where_it_was",),
    ),
    Mutation(
        "switch-site-not-asked-through-caddy",
        "with switch.site, a switch is kept only once the new commit answers there through Caddy",
        "gbdeploy/caddy_switch.py",
        "return self.confirm_site(remote, unhealthy, dials_new=None if dials is None else True)",
        'return f"Caddy dials {new}"',
        (
            "tests/test_switch_deploy.py::test_a_site_that_does_not_answer_the_new_commit_undoes_"
            "the_switch[site-routes-elsewhere]",
        ),
    ),
    # --- verify ---------------------------------------------------------------------------------
    Mutation(
        "verify-accepts-a-root-copy",
        "verify fails when the binary also runs as another user than the service's",
        "gbdeploy/verify.py",
        '"process runs the binary", bool(mine) and not others, saw',
        '"process runs the binary", bool(mine), saw',
        (P + "test_verify_fails_when_a_copy_runs_as_another_user_beside_the_services",),
    ),
    Mutation(
        "verify-ignores-the-commit-bytes",
        "verify fails when the binary's bytes lack the commit, whatever health says",
        "gbdeploy/verify.py",
        "contains_commit=bool(contains),",
        "contains_commit=contains is not None,",
        (P + "test_verify_fails_when_the_binary_lacks_the_commit_though_health_reports_it",),
    ),
    # --- release --------------------------------------------------------------------------------
    Mutation(
        "root-pushed-first",
        "the root (which starts CI) is pushed only after the submodule reached every remote",
        "gbdeploy/git_release.py",
        "    for step in plan.steps:\n",
        '    for step in sorted(plan.steps, key=lambda s: s.kind == "push-submodule"):\n',
        (P + "test_release_pushes_the_root_only_after_the_submodule_reached_every_remote",),
    ),
    Mutation(
        "behind-not-refused",
        "a branch behind its remote is refused before anything is pushed",
        "gbdeploy/git_release.py",
        "if tip != head and not _contains(repo, head, tip):",
        "if False:",
        ("tests/test_release_git.py",),
    ),
    Mutation(
        "dispatch-beside-the-push-run",
        "with --dispatch, a workflow the push already starts is followed, not dispatched again",
        "gbdeploy/release.py",
        "if dispatch and pushes and workflow_text and starts_on_push(workflow_text, branch):",
        "if False:",
        (
            "tests/test_release_e2e.py::"
            "test_release_with_dispatch_follows_the_push_run_instead_of_deploying_twice",
        ),
    ),
    Mutation(
        "both-placements-accepted",
        "a workflow both repositories start on push is refused (it would deploy twice)",
        "gbdeploy/forge/placement.py",
        "        and starts_on_push(in_component, branch)\n    ):",
        "        and starts_on_push(in_component, branch)\n        and False\n    ):",
        (
            "tests/test_release_e2e.py::test_a_workflow_in_both_placements_is_refused_before_any_push",
        ),
    ),
    # --- forge ----------------------------------------------------------------------------------
    Mutation(
        "dispatch-retried-on-5xx",
        "a POST (a dispatch) is never sent twice: only GETs are retried on a 5xx",
        "gbdeploy/forge/client.py",
        'if not (status >= 500 and request.method == "GET"):',
        "if not status >= 500:",
        (P + "test_a_dispatch_answered_with_a_gateway_error_is_not_sent_again",),
    ),
    Mutation(
        "plan-shows-the-token",
        "the printed plan of forge requests never shows the token",
        "gbdeploy/forge/client.py",
        'headers["Authorization"] = "token ***"',
        'headers["Authorization"] = f"token {self._token.reveal()}"',
        ("tests/test_release_git.py", "tests/test_forge.py"),
    ),
    Mutation(
        "wait-gives-up-late",
        "waiting for a CI run stops at its timeout, not later (exit 4, with the resume command)",
        "gbdeploy/forge/waiting.py",
        "deadline = started + timeout",
        "deadline = started + 2 * timeout",
        ("tests/test_forge.py::test_wait_gives_up_at_the_timeout_with_the_resume_command",),
    ),
    Mutation(
        "superseded-by-any-workflow",
        "a cancelled run is said to be superseded only by a later run of the same workflow",
        "gbdeploy/forge/waiting.py",
        "                and other.workflow_id == run.workflow_id\n",
        "",
        (P + "test_a_cancelled_run_is_not_blamed_on_a_later_run_of_another_workflow",),
    ),
    # --- workflows ------------------------------------------------------------------------------
    Mutation(
        "workflow-prints-key",
        "the rendered workflow never prints the deploy key",
        "gbdeploy/workflows.py",
        """'  echo "deploy key written"\\n'""",
        """f'  cat "{SSH_DIR}/deploy_key"\\n'""",
        ("tests/test_workflows.py", "tests/test_runner.py"),
    ),
    Mutation(
        "deploys-cancel-each-other",
        "a running deploy is never cancelled by a later push's run",
        "gbdeploy/workflows.py",
        '-deploy-{name}\')}\\n"\n        "  cancel-in-progress: false\\n"',
        '-deploy-{name}\')}\\n"\n        "  cancel-in-progress: true\\n"',
        ("tests/test_workflows.py",),
    ),
    Mutation(
        "known-hosts-unused",
        "the CI deploy checks the target's host key against DEPLOY_KNOWN_HOSTS",
        "gbdeploy/workflows.py",
        """f'  export GBDEPLOY_SSH_KNOWN_HOSTS="{SSH_DIR}/known_hosts"\\n'""",
        """f'  : "{SSH_DIR}/known_hosts"\\n'""",
        (P + "test_the_ci_deploy_is_given_the_known_hosts_from_its_secret",),
    ),
    Mutation(
        "pinned-file-unchecked",
        "the CI installs a gbdeploy file only when it has the pinned sha256",
        "gbdeploy/workflows.py",
        '    if pin.sha256:\n        env["GBDEPLOY_INSTALL_SHA256"] = pin.sha256\n',
        '    if False:\n        env["GBDEPLOY_INSTALL_SHA256"] = pin.sha256\n',
        ("tests/test_workflows.py::test_a_pinned_file_with_another_hash_is_never_installed",),
    ),
    Mutation(
        "unpinned-install-accepted",
        "the CI installs gbdeploy only from a pinned commit or file, never by a bare name",
        "gbdeploy/install_lock.py",
        "    if _VCS.fullmatch(value):\n        return Pin(value)\n",
        "    if _VCS.fullmatch(value) or value:\n        return Pin(value)\n",
        ("tests/test_workflows.py",),
    ),
    # --- config ---------------------------------------------------------------------------------
    Mutation(
        "keep-releases-zero",
        "keep_releases below 1 is a config error (nothing would be left to roll back to)",
        "gbdeploy/config.py",
        'between(1, 100, "a whole number from 1 to 100")',
        'between(0, 100, "a whole number from 1 to 100")',
        (P + "test_keep_releases_below_one_is_a_config_error",),
    ),
    Mutation(
        "unknown-key-accepted",
        "a misspelt key in a component is an error naming it, not silently ignored",
        "gbdeploy/config_values.py",
        'for unknown in sorted(set(raw) - names - set(given) - {"name"}):',
        "for unknown in []:",
        ("tests/test_config.py",),
    ),
    Mutation(
        "token-read-from-a-file",
        "the forge token is never read from a configuration file",
        "gbdeploy/config.py",
        'if "token" in section["forge"]:',
        "if False:",
        ("tests/test_config.py",),
    ),
    Mutation(
        "unknown-host-key-trusted",
        "an ssh host key not in known_hosts is refused unless accept_new_host_keys says otherwise",
        "gbdeploy/remote/connection.py",
        "        if not self.accept_new:\n            port =",
        "        if False:\n            port =",
        ("tests/test_connection.py",),
    ),
    # --- doctor ---------------------------------------------------------------------------------
    Mutation(
        "vault-group-readable",
        "Vault's init.json passes only when root alone can read it",
        "gbdeploy/doctor/parsers/hosts.py",
        'return self.owner == "root" and self.mode & 0o077 == 0',
        'return self.owner == "root" and self.mode & 0o007 == 0',
        (P + "test_vault_init_readable_by_anyone_but_root_fails_doctor",),
    ),
    Mutation(
        "loopback-accept-anywhere",
        "loopback must be accepted before the first DROP, not anywhere in the chain",
        "gbdeploy/doctor/parsers/firewall.py",
        "if accept and (block is None or accept.position < block.position):",
        "if accept:",
        ("tests/test_doctor_parsers.py",),
    ),
    Mutation(
        "binary-owned-by-root-passes",
        "doctor fails a component binary not owned by its service user",
        "gbdeploy/doctor/components.py",
        'if found.split(":")[0] == user:',
        'if found.split(":")[0] in (user, "root"):',
        ("tests/test_doctor.py::test_a_broken_production_fails_every_rule_with_what_it_saw",),
    ),
    Mutation(
        "snapshot-keep-unchecked",
        "a daily ZFS snapshot job that keeps more than the retention fails doctor",
        "gbdeploy/doctor/host.py",
        "too_long = [r for r in retentions if r.days > days + 0.5]",
        "too_long = []",
        (P + "test_a_daily_snapshot_job_keeping_more_than_the_retention_fails_doctor",),
    ),
    Mutation(
        "stale-snapshots-by-day-count",
        "ZFS snapshots older than the retention (in days) fail doctor",
        "gbdeploy/doctor/parsers/system.py",
        "cutoff = now - retention_days * 86400",
        "cutoff = now - retention_days * 86400 * 7",
        ("tests/test_doctor.py", "tests/test_doctor_parsers.py"),
    ),
    # --- maintenance ----------------------------------------------------------------------------
    Mutation(
        "trim-newest-first",
        "over the size limit, the least recently used cache units go first",
        "gbdeploy/maintenance.py",
        "key=lambda u: (u.last_used, str(u.path))",
        "key=lambda u: (-u.last_used, str(u.path))",
        ("tests/test_maintenance.py",),
    ),
    Mutation(
        "atime-ignored",
        "a cache unit read recently (atime) counts as used, not only one written",
        "gbdeploy/maintenance.py",
        "return max(info.st_atime, info.st_mtime)",
        "return info.st_mtime",
        (P + "test_maintenance_keeps_a_cache_entry_read_recently_though_written_long_ago",),
    ),
    Mutation(
        "symlinked-cache-followed",
        "a cache directory that is a symlink is skipped, never followed into",
        "gbdeploy/maintenance.py",
        "if root.is_symlink():",
        "if False:",
        ("tests/test_maintenance.py",),
    ),
    # --- output ---------------------------------------------------------------------------------
    Mutation(
        "reporter-unmasked",
        "the Reporter masks the token in everything it prints",
        "gbdeploy/output.py",
        "self.stream.write(redact(text, *self.secrets))",
        "self.stream.write(text)",
        ("tests/test_output.py",),
    ),
    # --- hooks, notifications, freeze, history, logs ----------------------------------------------
    Mutation(
        "pre-deploy-failure-ignored",
        "a pre_deploy hook that exits non-zero stops the deploy before anything changes",
        "gbdeploy/hooks.py",
        'code = run_hook("pre_deploy", command, facts, reporter, cwd=cwd)\n    if code != 0:',
        'code = run_hook("pre_deploy", command, facts, reporter, cwd=cwd)\n    if code < 0:',
        ("tests/test_hooks_notify.py",),
    ),
    Mutation(
        "hook-commits-swapped",
        "a hook's GBDEPLOY_FROM_COMMIT is the commit that ran before, GBDEPLOY_TO_COMMIT the new",
        "gbdeploy/hooks.py",
        "            self.from_commit,\n            self.to_commit,",
        "            self.to_commit,\n            self.from_commit,",
        ("tests/test_hooks_notify.py",),
    ),
    Mutation(
        "notify-token-sent",
        "the webhook's body never holds the forge token",
        "gbdeploy/notify.py",
        "return redact(text, *token_values()).encode()",
        "return text.encode()",
        ("tests/test_hooks_notify.py",),
    ),
    Mutation(
        "notify-url-path-printed",
        "only the webhook URL's scheme and host are printed (its path may hold a secret)",
        "gbdeploy/notify.py",
        'return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") else url',
        "return url",
        ("tests/test_hooks_notify.py",),
    ),
    Mutation(
        "freeze-not-enforced",
        "a frozen component refuses deploys (the freeze is more than a note)",
        "gbdeploy/remote/far_end/steps.sh",
        'if frozen_record "$1"; then bad=1; fi',
        'if frozen_record "$1"; then bad=0; fi',
        (
            "tests/test_service_control.py::test_a_frozen_component_refuses_the_next_deploy_with_the_reason",
        ),
    ),
    Mutation(
        "history-failed-deploy-current",
        "history marks as running the newest *successful* deploy of the running binary",
        "gbdeploy/history.py",
        "if entry.succeeded and entry.sha256 == running_sha256:",
        "if entry.sha256 == running_sha256:",
        ("tests/test_history.py",),
    ),
    Mutation(
        "logs-grep-basic-regex",
        "`logs --grep` takes an extended regular expression (ERROR|WARN)",
        "gbdeploy/logs.py",
        'matcher = _call("grep", "-E", "-e", grep)',
        'matcher = _call("grep", "-e", grep)',
        ("tests/test_logs.py::test_grep_keeps_the_matching_lines_of_the_whole_log",),
    ),
    # --- release, forge, workflows, runs, verify (issue 24, second round) ------------------------
    Mutation(
        "dispatch-beside-an-unpushed-root-commit",
        "with --dispatch, a retry whose root commit is made but not yet pushed follows the push "
        "run it starts, not a second (dispatched) deploy",
        "gbdeploy/release.py",
        "return plan.message is not None or any(tip != state.root_head for tip in tips)",
        "return plan.message is not None",
        (
            "tests/test_release_e2e.py::"
            "test_dispatch_after_a_rejected_root_push_follows_the_push_run_of_the_retry",
            "tests/test_release_e2e.py::"
            "test_release_with_dispatch_follows_the_push_run_instead_of_deploying_twice",
            "tests/test_release_git.py::"
            "test_rejected_root_push_is_finished_by_running_again_with_one_commit",
        ),
    ),
    Mutation(
        "workflow-on-key-missed",
        "a workflow's `on:` (which YAML 1.1 reads as the key True) is read: a push trigger in "
        "both placements is refused before any push",
        "gbdeploy/forge/placement.py",
        'triggers = data.get("on", data.get(True))',
        'triggers = data.get("on")',
        (
            "tests/test_release_e2e.py::test_a_workflow_in_both_placements_is_refused_before_any_push",
            "tests/test_release_e2e.py::"
            "test_release_with_dispatch_follows_the_push_run_instead_of_deploying_twice",
        ),
    ),
    Mutation(
        "dispatch-at-the-branch",
        "a dispatch names the released commit itself, never the branch (which may have moved)",
        "gbdeploy/forge/waiting.py",
        "dispatched = client.dispatch(workflow, sha, inputs)",
        "dispatched = client.dispatch(workflow, ref, inputs)",
        (
            "tests/test_forge.py::"
            "test_a_dispatch_builds_the_released_commit_even_when_the_branch_moved",
        ),
    ),
    Mutation(
        "cancelled-run-superseded-by-itself",
        "a cancelled run is blamed on a *later* run only; with none, it is a plain failure",
        "gbdeploy/forge/waiting.py",
        "other.id > run.id",
        "other.id >= run.id",
        (P + "test_a_cancelled_run_is_not_blamed_on_a_later_run_of_another_workflow",),
    ),
    Mutation(
        "runs-pages-rounded-down",
        "every page of runs is read (51 runs are two pages), so the newest run of a server that "
        "lists oldest first is found",
        "gbdeploy/forge/client.py",
        "pages = max(1, math.ceil(first.total_count / PAGE_LIMIT))",
        "pages = max(1, first.total_count // PAGE_LIMIT)",
        (
            "tests/test_forge.py::test_iter_runs_pages_by_total_count",
            "tests/test_forge.py::test_runs_are_listed_newest_first_whatever_order_the_server_sends",
        ),
    ),
    Mutation(
        "skipped-run-succeeds",
        "a skipped CI run did not deploy: release ends with exit 3, not as a success",
        "gbdeploy/forge/models.py",
        'return self.status == "success"',
        'return self.status in ("success", "skipped")',
        (
            "tests/test_forge.py::test_cli_wait_on_a_skipped_run_exits_3_it_deployed_nothing",
            "tests/test_forge.py::test_wait_on_a_failed_run_is_exit_3_with_the_log_tail",
            "tests/test_forge.py::test_cli_wait_by_sha_of_a_failed_run_exits_3",
        ),
    ),
    Mutation(
        "deploy-key-left-on-the-runner",
        "the deploy key written for the deploy step is removed when the step ends",
        "gbdeploy/workflows.py",
        """f"trap 'rm -f \\"{SSH_DIR}/deploy_key\\"' EXIT\\n\"""",
        '""',
        (
            "tests/test_runner.py::test_the_deploy_key_is_gone_as_soon_as_the_deploy_step_ends",
            "tests/test_runner.py::test_rendered_workflow_builds_with_the_commit_and_deploys",
            "tests/test_workflows.py::test_secrets_are_never_echoed_by_the_rendered_text",
        ),
    ),
    Mutation(
        "build-embeds-the-root-commit",
        "the build embeds the component's own commit (what verify looks for), not the root's",
        "gbdeploy/workflow_build.py",
        """'BOTSERVER_COMMIT="$(git rev-parse --short HEAD)"\\n'""",
        """'BOTSERVER_COMMIT="$(git -C "$workspace" rev-parse --short HEAD)"\\n'""",
        (
            "tests/test_runner.py::test_rendered_workflow_builds_with_the_commit_and_deploys",
            "tests/test_release_e2e.py::test_release_pushes_builds_deploys_and_verifies_the_new_commit",
        ),
    ),
    Mutation(
        "verify-stops-at-the-first-pass",
        "release's verify retries until every check passes (a service may still be starting)",
        "gbdeploy/verify.py",
        "if all(r.ok for r in results) or clock() >= deadline:",
        "if any(r.ok for r in results) or clock() >= deadline:",
        (
            "tests/test_verify_judge.py::test_verification_retries_until_the_service_is_up_then_passes",
        ),
    ),
    Mutation(
        "runs-limit-one-too-many",
        "`runs --limit N` lists at most N runs",
        "gbdeploy/runs.py",
        "            if len(runs) >= limit:\n",
        "            if len(runs) > limit:\n",
        (
            "tests/test_forge.py::test_cli_runs_lists_no_more_than_its_limit",
            "tests/test_forge.py::test_cli_runs_prints_a_table",
        ),
    ),
    # --- forge, verify ----------------------------------------------------------------------------
    Mutation(
        "wait-follows-the-oldest-run",
        "of several runs of the workflow for one commit, the newest is followed",
        "gbdeploy/forge/waiting.py",
        "return max(matching, key=lambda r: r.id) if matching else None",
        "return min(matching, key=lambda r: r.id) if matching else None",
        ("tests/test_forge.py",),
    ),
    Mutation(
        "verify-empty-commit-matches",
        "verify fails a health answer whose commit is empty or shorter than 7 digits",
        "gbdeploy/verify.py",
        "if len(seen) < MIN_COMMIT_DIGITS or len(expected) < MIN_COMMIT_DIGITS:",
        "if not expected:",
        ("tests/test_verify_judge.py",),
    ),
    Mutation(
        "verify-health-status-ignored",
        "verify fails a health answer with the right commit but a status other than ok",
        "gbdeploy/verify.py",
        'ok = status == "ok" and commits_match(expected_commit, commit)',
        "ok = commits_match(expected_commit, commit)",
        ("tests/test_verify_judge.py",),
    ),
    # --- the holds of a deploy on a real service (issue 19), and its cancel -----------------------
    Mutation(
        "cancel-raises-in-handler",
        "a cancel only sets a flag and cuts: nothing is raised where the signal lands (inside "
        "paramiko it would leave a lock held, and the undo then waits for it forever)",
        "gbdeploy/deploy/engine.py",
        "        cancelled.set()\n        cut()\n",
        "        cancelled.set()\n        cut()\n        raise KeyboardInterrupt\n",
        (
            "tests/test_deploy_engine.py::"
            "test_a_cancel_never_raises_inside_a_step_it_cuts_and_the_step_ends_interrupted",
        ),
    ),
    Mutation(
        "commit-trailing-newline-accepted",
        "a --commit with a newline anywhere, a last one too, is refused before anything runs",
        "gbdeploy/deploy/command.py",
        "not layout.COMMIT.fullmatch(commit)",
        "not layout.COMMIT.match(commit)",
        (H + "test_a_commit_with_a_newline_is_refused",),
    ),
    Mutation(
        "launch-keeps-ignored-signals",
        "a service gbdeploy starts has default signal dispositions (the script's ignored "
        "TERM is not inherited), so SIGTERM stops it, also where env has no --default-signal",
        "gbdeploy/remote/far_end/lib.sh",
        '( trap - HUP INT QUIT TERM PIPE; . "$1" )',
        '( . "$1" )',
        (
            H + "test_a_service_gbdeploy_started_has_default_signals_and_stops_on_sigterm",
            "tests/test_service.py::"
            "test_a_launched_service_keeps_sigterm_though_the_script_starting_it_ignores_it",
        ),
    ),
    Mutation(
        "launch-without-env-default-signal",
        "a started service does not ignore the INT and QUIT that `&` ignores for a background "
        "command (GNU env --default-signal resets them)",
        "gbdeploy/deploy/service.py",
        '            "$reset",\n',
        "",
        (
            "tests/test_service.py::"
            "test_a_launched_service_keeps_sigterm_though_the_script_starting_it_ignores_it",
        ),
    ),
    Mutation(
        "restore-deletes-b-on-no-record",
        "a restore that does not know whether a binary was there before leaves B in place",
        "gbdeploy/remote/far_end/lib.sh",
        '  0) rm -f -- "$B" "$G" ;;',
        '  0|"") rm -f -- "$B" "$G" ;;',
        (H + "test_a_restore_with_an_empty_record_never_deletes_the_binary",),
    ),
    Mutation(
        "undo-after-done-restores",
        "the undo after the target finished (journal `done`) leaves the new service running",
        "gbdeploy/remote/far_end/steps.sh",
        "    healthy|done) echo kept; exit 0 ;;",
        "    healthy) echo kept; exit 0 ;;",
        (
            H + "test_a_cancel_or_drop_after_the_target_finished_leaves_the_new_service",
            H + "test_an_undo_meeting_a_finish_under_way_keeps_the_new_service",
        ),
    ),
    Mutation(
        "settle-window-skipped",
        "a release is kept only after it stayed healthy through health_settle",
        "gbdeploy/deploy/health.py",
        "if settled_from is not None and now - settled_from >= settle:",
        "if settled_from is not None:",
        (
            H + "test_a_binary_that_dies_after_its_first_healthy_answer_is_not_kept",
            H + "test_a_health_that_flaps_is_not_kept",
        ),
    ),
    Mutation(
        "forge-message-cut-before-redact",
        "a forge message that echoes the token shows none of it, also where the cut falls",
        "gbdeploy/forge/client.py",
        "redact(message, sent.partition(' ')[2].strip())[:300]",
        "redact(message[:300], sent.partition(' ')[2].strip())",
        (
            "tests/test_forge_limits.py::test_a_server_message_echoing_the_token_at_the_cut_shows_none_of_it",
        ),
    ),
    Mutation(
        "forge-body-without-deadline",
        "a forge that trickles its answer ends at forge.timeout, not when it stops sending",
        "gbdeploy/forge/transport.py",
        "            if self._overdue():\n",
        "            if False:\n",
        (
            "tests/test_forge_limits.py::test_runs_from_a_trickling_forge_ends_at_forge_timeout",
            "tests/test_forge_limits.py::test_wait_on_a_trickling_forge_ends_at_forge_timeout",
        ),
    ),
    Mutation(
        "recover-ignores-a-live-session",
        "--recover keeps the lock of a deploy whose session is still connected, unless forced",
        "gbdeploy/remote/far_end/steps.sh",
        '  if [ "$forced" = 0 ] && [ -n "$s" ] && connected "$s"; then echo "live-session $s"',
        '  if false; then echo "live-session $s"',
        (H + "test_recover_refuses_a_lock_whose_deploy_is_still_connected_from_elsewhere",),
    ),
    Mutation(
        "unchanged-redeploy-forgets-the-commit",
        "an unchanged redeploy without --commit keeps the commit the releases know for its sha256",
        "gbdeploy/deploy/deployment.py",
        "                self.commit = known[-1] if known else None\n",
        "                self.commit = None\n",
        (H + "test_an_unchanged_redeploy_without_commit_keeps_the_known_commit",),
    ),
    # --- switch -----------------------------------------------------------------------------------
    Mutation(
        "caddyfile-written-unvalidated",
        "a Caddyfile that Caddy rejects is never put in place of the live one",
        "gbdeploy/remote/far_end/proxy.sh",
        '"$5" validate --adapter caddyfile --config "$new" || exit',
        ": || exit",
        ("tests/test_caddy_switch.py",),
    ),
    Mutation(
        "caddyfile-edit-overwritten",
        "a Caddyfile changed by someone since it was read is not overwritten",
        "gbdeploy/remote/far_end/proxy.sh",
        '  fi\n  unchanged_since_read "$f" "$3"\n  trap',
        "  fi\n  trap",
        ("tests/test_caddy_switch.py",),
    ),
    Mutation(
        "switch-stop-kills-a-reused-pid",
        "the switch stops the old pid only while it still runs the binary (never a reused pid)",
        "gbdeploy/remote/far_end/procs.sh",
        'runs "$1" || { echo "none $1"; return 0; }',
        'kill -0 "$1" 2>/dev/null || { echo "none $1"; return 0; }',
        ("tests/test_switch_process.py",),
    ),
    # --- config, doctor, maintenance, status, history, the remote layer, output (issue 24) -------
    Mutation(
        "env-false-read-as-true",
        "a GBDEPLOY_* variable set to false (no, off, 0) turns a true/false key off",
        "gbdeploy/config_layers.py",
        "        return text.strip().lower() in _TRUE\n",
        "        return bool(text.strip())\n",
        ("tests/test_config.py::test_false_from_a_variable_is_false",),
    ),
    Mutation(
        "target-path-with-dotdot-accepted",
        "a path on the target with a `..` part is a config error naming the key",
        "gbdeploy/config_values.py",
        'return all(part not in ("", ".", "..") and not part.startswith("-") for part in parts)',
        'return all(part not in ("", ".") and not part.startswith("-") for part in parts)',
        ("tests/test_config.py::test_a_wrong_key_or_value_exits_2_naming_the_key",),
    ),
    Mutation(
        "doctor-json-fix-notes-on-stdout",
        "with --json, stdout holds only the JSON list: what --fix changed goes to stderr",
        "gbdeploy/doctor/report.py",
        "notes = Reporter(stream=sys.stderr, secrets=reporter.secrets) if as_json else reporter",
        "notes = reporter",
        (
            "tests/test_doctor.py::"
            "test_cli_json_fix_keeps_stdout_pure_json_and_says_what_changed_on_stderr",
        ),
    ),
    Mutation(
        "doctor-fix-not-rechecked",
        "after --fix changed something, doctor checks again: what it repaired passes (exit 0)",
        "gbdeploy/doctor/report.py",
        'if any(line.startswith("changed:") for line in changes):',
        'if any(line.startswith("changed ") for line in changes):',
        ("tests/test_doctor.py::test_fix_repairs_exactly_the_safe_ones",),
    ),
    Mutation(
        "maintain-follows-links-inside",
        "a symlink inside a cache is removed as a link: what it points to is never touched",
        "gbdeploy/maintenance.py",
        "info = entry.stat(follow_symlinks=False)",
        "info = entry.stat()",
        ("tests/test_maintenance.py::test_symlinks_are_removed_as_links_never_followed",),
    ),
    Mutation(
        "history-time-labelled-utc",
        "history shows each time in UTC, whatever zone the log recorded it in",
        "gbdeploy/history.py",
        "parsed = parsed.astimezone(timezone.utc)",
        "parsed = parsed.replace(tzinfo=timezone.utc)",
        (
            "tests/test_history.py::"
            "test_times_in_any_zone_are_shown_in_utc_and_odd_values_as_they_are",
        ),
    ),
    Mutation(
        "status-misses-a-lock-without-holder",
        "status shows a held lock (and fails) also when the lock has no holder record",
        "gbdeploy/deploy/status.py",
        "if facts.held_age is not None or facts.holder is not None:",
        "if facts.held_age is not None and facts.holder is not None:",
        ("tests/test_deploy_faults.py::test_a_lock_without_holder_is_shown_by_status",),
    ),
    Mutation(
        "session-run-without-timeout",
        "a command run through the deploy's session ends at its timeout (RemoteError), not never",
        "gbdeploy/remote/session.py",
        "words = self._read_line(channel, timeout).split()",
        "words = self._read_line(channel, None).split()",
        (
            "tests/test_session.py::"
            "test_a_command_that_outlives_its_timeout_ends_the_session_with_an_error",
        ),
    ),
    Mutation(
        "internal-error-unredacted",
        "an internal error's message never shows the token",
        "gbdeploy/errors.py",
        "    return redact(text, *secrets)\n",
        "    return text\n",
        (
            "tests/test_cli_errors.py::"
            "test_an_unexpected_exception_is_reported_as_a_bug_with_exit_1",
        ),
    ),
    Mutation(
        "far-end-call-naive-quotes",
        "every value in a far-end call reaches it as typed, a quote in it too (a freeze reason)",
        "gbdeploy/deploy/layout.py",
        """return f"'{text}'" if text in _RESERVED else quote(text)""",
        "return f\"'{text}'\"",
        ("tests/test_service_control.py",),
    ),
    Mutation(
        "doctor-fix-repairs-passing-checks",
        "doctor --fix changes only what fails: a passing loopback check gets no second ACCEPT rule",
        "gbdeploy/doctor/runner.py",
        'if finding.status != "fail" or check.repair is None:',
        "if check.repair is None:",
        (
            "tests/test_doctor.py::"
            "test_fix_changes_only_what_fails_and_leaves_each_passing_check_alone",
        ),
    ),
    Mutation(
        "receiver-writes-through-a-dangling-link",
        "an upload never writes through a symlink planted at its path, a dangling one too",
        "gbdeploy/remote/transfer.py",
        "if [ -f {path} ] || [ -L {path} ]; then",
        "if [ -f {path} ]; then",
        ("tests/test_transfer.py::test_upload_never_writes_through_a_link_left_at_the_path",),
    ),
    Mutation(
        "redact-misses-an-escaped-token",
        "the token is masked also where a message escapes it (a repr doubles a backslash)",
        "gbdeploy/errors.py",
        "forms = {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]}",
        "forms = {secret}",
        (
            "tests/test_cli_errors.py::"
            "test_an_internal_error_hides_a_token_also_where_its_message_escapes_it",
        ),
    ),
    Mutation(
        "known-hosts-overwritten-on-accept",
        "accepting a new host key appends it: every other known host stays in known_hosts",
        "gbdeploy/remote/connection.py",
        'with open(self.save_to, "a") as f:',
        'with open(self.save_to, "w") as f:',
        ("tests/test_connection.py::test_accepting_a_new_host_key_keeps_every_other_known_host",),
    ),
    Mutation(
        "ssh-config-accept-new-ignored",
        "StrictHostKeyChecking accept-new in the ssh config records and trusts a new host's key",
        "gbdeploy/remote/connection.py",
        'accept_new = ssh.accept_new_host_keys or strict in ("accept-new", "no", "off")',
        "accept_new = ssh.accept_new_host_keys",
        (
            "tests/test_connection.py::"
            "test_stricthostkeychecking_accept_new_in_the_ssh_config_is_honoured",
        ),
    ),
    Mutation(
        "maintain-crate-dir-by-mtime",
        "a cache directory one of whose files a build read recently (atime) is kept whole",
        "gbdeploy/maintenance.py",
        "newest = max(newest, _last_used(entry))",
        "newest = max(newest, entry.st_mtime)",
        ("tests/test_maintenance.py::test_a_crate_whose_sources_a_build_read_recently_is_kept",),
    ),
    Mutation(
        "doctor-missing-tool-skipped",
        "a check whose tool is not installed fails doctor (unless the check says skip)",
        "gbdeploy/doctor/runner.py",
        "                check.when_missing,\n",
        '                "skip",\n',
        ("tests/test_doctor.py::test_a_check_whose_tool_is_not_installed_fails_naming_where",),
    ),
    Mutation(
        "logs-grep-on-two-lines-accepted",
        "`logs --grep` refuses a pattern on two lines (grep would read it as two patterns), exit 2",
        "gbdeploy/logs.py",
        '(not grep or "\\n" in grep or "\\0" in grep)',
        '(not grep or "\\0" in grep)',
        ("tests/test_logs.py::test_a_hostile_or_broken_pattern_is_quoted_or_refused",),
    ),
    Mutation(
        "comments-only-config-refused",
        "a config file of comments only (YAML reads nothing) gives the defaults, not an error",
        "gbdeploy/config_layers.py",
        "    if data is None:\n        return {}\n",
        "",
        ("tests/test_config.py::test_a_config_file_of_comments_only_gives_the_defaults",),
    ),
    Mutation(
        "logs-since-without-zone-local",
        "`logs --since` reads an ISO time without a zone as UTC (as the log stamps), not local",
        "gbdeploy/logs.py",
        "moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)",
        "moment = moment if moment.tzinfo else moment.astimezone(timezone.utc)",
        ("tests/test_logs.py::test_an_iso_time_without_a_zone_is_utc_whatever_this_machines_zone",),
    ),
    # --- doctor, maintenance ----------------------------------------------------------------------
    Mutation(
        "doctor-weekly-cleanup-passes",
        "doctor passes the runner's cache cleanup only when a job runs it daily",
        "gbdeploy/doctor/ci_runner.py",
        "if j.daily and cleans(j, c)",
        "if cleans(j, c)",
        ("tests/test_doctor.py",),
    ),
    Mutation(
        "maintain-age-in-hours",
        "`maintain --max-age-days N` keeps what was used in the last N days",
        "gbdeploy/maintenance.py",
        "cutoff = now - max_age_days * DAY",
        "cutoff = now - max_age_days * 3600",
        ("tests/test_maintenance.py",),
    ),
)


def copy_checkout(into: Path) -> Path:
    """A clone of this checkout (the rendered workflows pin its commit) with the tracked and
    untracked-but-not-ignored files laid over it as they are in the working tree."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(into)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if not source.is_file():
            continue
        target = into / raw.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shared = ROOT.parent / "shared"
    if shared.exists() and not (into.parent / "shared").exists():
        (into.parent / "shared").symlink_to(shared)
    return into


def apply(mutation: Mutation, checkout: Path, *, dry_run: bool = False) -> None:
    """Break `checkout`; LookupError when the text to break is not there exactly once."""
    path = checkout / mutation.path
    text = path.read_text() if path.is_file() else ""
    count = text.count(mutation.old)
    if count != 1:
        raise LookupError(f"{mutation.path}: the text to break occurs {count} times, not once")
    if not dry_run:
        path.write_text(text.replace(mutation.old, mutation.new))


TEST_TIMEOUT = 900  # seconds; tests still running then count as failed (a break may hang them)


def run_tests(mutation: Mutation, checkout: Path) -> subprocess.CompletedProcess[str]:
    # The copy's own packages come first, so the tests import the broken code, not this checkout.
    env = dict(os.environ, PYTHONPATH=f"{checkout}{os.pathsep}{checkout / 'sandbox'}")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0"]
    try:
        return subprocess.run(
            [*command, *mutation.tests],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=TEST_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        hung = f"the tests were still running after {TEST_TIMEOUT}s (stopped)"
        return subprocess.CompletedProcess(command, 1, hung, "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME…]",
        help="run only these mutations (repeat the option or separate names with commas)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    wanted = {name for names in args.only for name in names.split(",") if name}
    unknown = wanted - {m.name for m in MUTATIONS}
    if unknown:
        print(f"unknown mutation(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    if args.list:
        for mutation in MUTATIONS:
            print(f"{mutation.name}: {mutation.promise}")
        return 0
    chosen = [m for m in MUTATIONS if not wanted or m.name in wanted]
    tally = {"caught": 0, "SURVIVED": 0, "STALE": 0, "BASELINE": 0}
    controls: dict[tuple[str, ...], str | None] = {}  # tests → why they fail unbroken, or None
    for mutation in chosen:
        with tempfile.TemporaryDirectory(prefix="gbdeploy-mutant-") as scratch:
            # The service user of the tests runs the copy's stand-ins over ssh: mkdtemp's 0700
            # would make their tests fail in the copy alone (BASELINE, though nothing is wrong).
            os.chmod(scratch, 0o755)
            checkout = copy_checkout(Path(scratch) / "main")
            try:  # first: a break whose text is gone no longer applies (the source changed)
                apply(mutation, checkout, dry_run=True)
            except LookupError as error:
                outcome, detail = "STALE", f"{error}: update the break to the source"
            else:
                if mutation.tests not in controls:
                    # The control: unbroken, the same tests must pass, or a failure proves nothing.
                    control = run_tests(mutation, checkout)
                    controls[mutation.tests] = (
                        None if control.returncode == 0 else last_line(control.stdout)
                    )
                failing = controls[mutation.tests]
                if failing is not None:
                    outcome, detail = "BASELINE", f"its tests fail without the break: {failing}"
                else:
                    apply(mutation, checkout)
                    result = run_tests(mutation, checkout)
                    caught = result.returncode not in (0, 5)
                    outcome, detail = ("caught" if caught else "SURVIVED"), last_line(result.stdout)
        tally[outcome] += 1
        print(f"{outcome:8} {mutation.name}: {detail}", flush=True)
    print(
        f"{tally['caught']} of {len(chosen)} breaks caught, {tally['SURVIVED']} survived, "
        f"{tally['STALE']} no longer apply, {tally['BASELINE']} with tests failing unbroken"
    )
    return 0 if tally["caught"] == len(chosen) else 1


def last_line(output: str) -> str:
    return (output.strip().splitlines() or ["(no output)"])[-1]


if __name__ == "__main__":
    sys.exit(main())
