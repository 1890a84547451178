"""The swagger checker itself: it must flag what a wrong client or a GitHub-shaped emulator does,
and its copy of Forgejo's swagger must be the project's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.forgejo_schema import SWAGGER_PATH, ForgejoSchema

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "forgejo" / "swagger.v1.json"
RUNS = "/api/v1/repos/GeneralBots/gb/actions/runs"
JSON = {"Content-Type": "application/json;charset=utf-8"}
UNSET = "1970-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def schema() -> ForgejoSchema:
    return ForgejoSchema()


def run_json(**changes):
    run = {
        "id": 7,
        "index_in_repo": 3,
        "commit_sha": "a" * 40,
        "workflow_id": "botserver.yaml",
        "event": "push",
        "status": "running",
        "title": "t",
        "html_url": "http://127.0.0.1/GeneralBots/gb/actions/runs/3",
        "started": "2026-07-01T10:00:00Z",
        "stopped": UNSET,
        "duration": 1_000_000_000,
    }
    run.update(changes)
    return json.dumps(run).encode()


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared beside this clone")
def test_the_swagger_copy_is_byte_identical_to_shared():
    assert SWAGGER_PATH.read_bytes() == SHARED.read_bytes()


def test_a_forgejo_run_passes(schema):
    assert schema.check_response("GET", f"{RUNS}/7", 200, JSON, run_json()) == []


def test_github_shaped_fields_are_flagged(schema):
    problems = schema.check_response(
        "GET", f"{RUNS}/7", 200, JSON, run_json(conclusion="success", head_sha="a" * 40)
    )
    assert any("conclusion" in p for p in problems)
    assert any("head_sha" in p for p in problems)


def test_wrong_types_and_times_are_flagged(schema):
    problems = schema.check_response(
        "GET", f"{RUNS}/7", 200, JSON, run_json(id="7", started="yesterday")
    )
    assert len(problems) == 2


def test_the_seeds_trigger_url_is_not_an_operation(schema):
    path = "/api/v1/repos/GeneralBots/gb/actions/workflows/botserver.yaml/runs"
    assert schema.check_request("POST", path, {}, {}, b"{}") == [
        f"POST {path}: no such operation in Forgejo's API"
    ]


def test_undeclared_and_mistyped_query_parameters_are_flagged(schema):
    problems = schema.check_request(
        "GET", RUNS, {"per_page": ["50"], "page": ["two"], "status": ["completed"]}, {}, b""
    )
    assert len(problems) == 3
    assert any("per_page" in p for p in problems)


def test_a_dispatch_body_is_checked_against_its_definition(schema):
    path = "/api/v1/repos/GeneralBots/gb/actions/workflows/botserver.yaml/dispatches"
    headers = {"content-type": "application/json"}
    good = json.dumps({"ref": "main", "inputs": {"a": "b"}, "return_run_info": True}).encode()
    bad = json.dumps({"inputs": {"a": 1}, "branch": "main"}).encode()

    assert schema.check_request("POST", path, {}, headers, good) == []
    assert len(schema.check_request("POST", path, {}, headers, bad)) == 3  # ref, 1, branch


def test_undeclared_statuses_and_pagination_headers_are_flagged(schema):
    dispatch = "/api/v1/repos/GeneralBots/gb/actions/workflows/botserver.yaml/dispatches"
    listing = json.dumps({"workflow_runs": [], "total_count": 0}).encode()

    assert schema.check_response("POST", dispatch, 200, JSON, b"{}") != []
    assert schema.check_response("GET", RUNS, 200, {**JSON, "Link": "<x>"}, listing) != []
    assert schema.check_response("GET", RUNS, 200, JSON, listing) == []
    assert schema.check_response("GET", "/api/v1/version", 401, JSON, b"{}") != []
