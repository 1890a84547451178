"""Check HTTP exchanges against Forgejo's own API description (Swagger 2.0).

Every request gbdeploy sends must name an operation of `tests/data/forgejo-swagger.v1.json`, use
only its declared query parameters with the declared types, and send a body valid against its
body schema; every answer must use a status the operation declares (or one Forgejo's middleware
sends on any repository route: 401, 403, 404, 5xx; and 400/500 from dispatch), a body
valid against that response's schema, and no pagination header the response does not declare.

Objects are checked strictly: a property the definition does not declare is a violation, so a
GitHub-shaped field (`conclusion`, `head_sha` on a run) is caught.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator, FormatChecker

SWAGGER_PATH = Path(__file__).parent / "data" / "forgejo-swagger.v1.json"
MIDDLEWARE_STATUSES = {
    401: "unauthorized",
    403: "forbidden",
    404: "notFound",
    500: "internalServerError",
    502: "internalServerError",
    503: "internalServerError",
    504: "internalServerError",
}
DISPATCH = ("post", "/repos/{owner}/{repo}/actions/workflows/{workflowfilename}/dispatches")
EXTRA_STATUSES = {DISPATCH: {400: "error", 500: "internalServerError"}}
PAGINATION_HEADERS = ("link", "x-total-count")
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|z|[+-]\d\d:\d\d)$")

formats = FormatChecker(formats=())


@formats.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    spec: dict[str, Any]

    @property
    def params(self) -> list[dict[str, Any]]:
        return self.spec.get("parameters", [])


class ForgejoSchema:
    def __init__(self, path: Path = SWAGGER_PATH, *, strict: bool = True) -> None:
        self.document = json.loads(path.read_text())
        self.base = self.document["basePath"]
        self.definitions = copy.deepcopy(self.document["definitions"])
        if strict:
            for definition in self.definitions.values():
                _close_objects(definition)

    @cached_property
    def _routes(self) -> list[tuple[re.Pattern[str], str]]:
        routes = []
        for template in self.document["paths"]:
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            routes.append((re.compile(pattern + "$"), template))
        # a literal segment wins over a parameter: /runs/jobs before /runs/{run_id}
        routes.sort(key=lambda r: r[1].count("{"))
        return routes

    def operation(self, method: str, path: str) -> Operation | None:
        if not path.startswith(self.base + "/"):
            return None
        relative = path[len(self.base) :]
        for pattern, template in self._routes:
            if pattern.match(relative):
                spec = self.document["paths"][template].get(method.lower())
                if spec is not None:
                    return Operation(method.lower(), template, spec)
        return None

    def validate(self, schema: dict[str, Any], value: Any) -> list[str]:
        validator = Draft4Validator(
            {**schema, "definitions": self.definitions}, format_checker=formats
        )
        return [
            f"{'/'.join(str(p) for p in error.absolute_path) or '(body)'}: {error.message}"
            for error in validator.iter_errors(value)
        ]

    # ---- requests

    def check_request(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> list[str]:
        where = f"{method} {path}"
        operation = self.operation(method, path)
        if operation is None:
            return [f"{where}: no such operation in Forgejo's API"]
        problems: list[str] = []
        relative = path[len(self.base) :]
        names = re.findall(r"\{([^}]+)\}", operation.template)
        values = re.fullmatch(
            re.sub(r"\\\{[^/]+?\\\}", "([^/]+)", re.escape(operation.template)), relative
        )
        assert values is not None
        declared = {(p["name"], p["in"]): p for p in operation.params}
        for name, value in zip(names, values.groups(), strict=True):
            param = declared.get((name, "path"))
            if param is None:
                problems.append(f"{where}: path parameter {name} is not declared")
            else:
                problems += _check_param(where, param, [value])
        for name, given in query.items():
            param = declared.get((name, "query"))
            if param is None:
                problems.append(f"{where}: query parameter {name!r} is not declared")
            else:
                problems += _check_param(where, param, given)
        for (name, place), param in declared.items():
            if param.get("required") and place == "query" and name not in query:
                problems.append(f"{where}: required query parameter {name!r} missing")
        auth = headers.get("authorization", "")
        if auth and not re.match(r"(token|bearer|basic) \S", auth, re.IGNORECASE):
            problems.append(f"{where}: Authorization header is not `token X`, `Bearer X` or Basic")
        body_param = next((p for p in operation.params if p["in"] == "body"), None)
        if body_param is None:
            if body:
                problems.append(f"{where}: sends a body the operation does not take")
            return problems
        if not body:
            if body_param.get("required"):
                problems.append(f"{where}: the body is required")
            return problems
        content_type = headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            problems.append(f"{where}: body sent as {content_type!r}, not application/json")
        try:
            data = json.loads(body)
        except ValueError:
            return [*problems, f"{where}: the body is not JSON"]
        problems += [f"{where}: body {p}" for p in self.validate(body_param["schema"], data)]
        return problems

    # ---- responses

    def check_response(
        self,
        method: str,
        path: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
    ) -> list[str]:
        where = f"{method} {path} → {status}"
        operation = self.operation(method, path)
        if operation is None:
            return [f"{where}: no such operation in Forgejo's API"]
        responses = self.document["paths"][operation.template][operation.method]["responses"]
        spec = responses.get(str(status))
        if spec is None:
            extra = EXTRA_STATUSES.get((operation.method, operation.template), {})
            name = extra.get(status) or (
                MIDDLEWARE_STATUSES.get(status)
                if operation.template.startswith("/repos/") or status >= 500
                else None
            )
            if name is None:
                return [f"{where}: status {status} is not declared for this operation"]
            spec = {"$ref": f"#/responses/{name}"}
        if "$ref" in spec:
            spec = self.document["responses"][spec["$ref"].rsplit("/", 1)[1]]
        problems: list[str] = []
        lower = {k.lower(): v for k, v in headers.items()}
        declared_headers = {h.lower() for h in spec.get("headers", {})}
        for header in PAGINATION_HEADERS:
            if header in lower and header not in declared_headers:
                problems.append(f"{where}: sends {header} which this response does not declare")
        schema = spec.get("schema")
        if schema is None:
            if body:
                problems.append(f"{where}: a body where the response declares none")
            return problems
        content_type = lower.get("content-type", "")
        if schema.get("type") == "string":
            produces = operation.spec.get("produces", self.document["produces"])
            if not any(content_type.startswith(p) for p in produces):
                problems.append(f"{where}: content type {content_type!r} not in {produces}")
            return problems
        if not content_type.startswith("application/json"):
            return [*problems, f"{where}: content type {content_type!r}, expected JSON"]
        try:
            data = json.loads(body)
        except ValueError:
            return [*problems, f"{where}: the body is not JSON"]
        return problems + [f"{where}: {p}" for p in self.validate(schema, data)]


def _close_objects(schema: Any) -> None:
    """additionalProperties: false on every object schema that lists its properties."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _close_objects(value)
    elif isinstance(schema, list):
        for item in schema:
            _close_objects(item)


def _check_param(where: str, param: dict[str, Any], values: list[str]) -> list[str]:
    name = param["name"]
    kind = param.get("type")
    if kind != "array" and len(values) > 1:
        return [f"{where}: {name} given {len(values)} times"]
    item = param.get("items", {}) if kind == "array" else param
    problems = []
    for value in values:
        item_kind = item.get("type")
        if item_kind == "integer" and not re.fullmatch(r"-?\d+", value):
            problems.append(f"{where}: {name}={value!r} is not an integer")
        if item_kind == "boolean" and value not in ("true", "false"):
            problems.append(f"{where}: {name}={value!r} is not a boolean")
        if "enum" in item and value not in item["enum"]:
            problems.append(f"{where}: {name}={value!r} not one of {item['enum']}")
    return problems


def exchange_violations(schema: ForgejoSchema, exchanges: list[Any]) -> list[str]:
    """Every violation in the emulator's recorded exchanges (its own `/_emulator` paths aside)."""
    problems: list[str] = []
    for exchange in exchanges:
        if not exchange.path.startswith(schema.base + "/"):
            continue
        problems += schema.check_request(
            exchange.method, exchange.path, exchange.query, exchange.headers, exchange.body
        )
        if exchange.status is not None:
            problems += schema.check_response(
                exchange.method,
                exchange.path,
                exchange.status,
                exchange.response_headers,
                exchange.response_body,
            )
    return problems
