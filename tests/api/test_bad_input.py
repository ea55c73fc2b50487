"""Bad input never gets a 500, always gets the one error body, and never leaves a partial write.

Acceptance criterion: every route answers bad input (wrong types, missing fields, unknown ids,
oversize bodies, expired/forged tokens) with the one error body, a 4xx status and the field
named, never 500, and no partial write remains in the database.

The cases are generated from the OpenAPI document, so a new route or field is covered as soon
as it is documented. Each test builds one set of records, loops over every operation and
collects every failure, so one run reports them all. The app runs with TESTING on: what would
be a 500 propagates as an exception, which is caught and reported as a failure too.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from sqlalchemy import Select, Table, func, select
from werkzeug.test import TestResponse

from cloud.db import get_database
from cloud.identity.tokens import AUDIENCE
from cloud.models import Base
from tests.helpers import PASSWORD, Client, Tenant

MAX_ID = 2**31 - 1  # ids are 32-bit on MariaDB
HUGE = 99999999999999999999  # more than 64 bits
PUBLIC = {
    "POST /api/v1/auth/token",
    "POST /api/v1/auth/revoke",
    "GET /api/v1/auth/jwks",
    # The invitation's secret (from the e-mailed link) is the credential of these two.
    "GET /api/v1/invitations/{invitation_id}/accept",
    "POST /api/v1/invitations/{invitation_id}/accept",
    # The PKI's public files: what brokers and devices fetch to verify certificates.
    "GET /api/v1/pki/ca.pem",
    "GET /api/v1/pki/crl",
    "GET /api/v1/pki/crl.pem",
}
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
# A field the schema refuses: 422 for JSON and queries, 400 for the OAuth2 form endpoints.
VALIDATION = frozenset({400, 422})
# A well-formed reference to a record that does not exist, in a body.
REFERENCE = frozenset({400, 403, 404, 409, 422})
ERROR_KEYS = {"code", "status", "message", "errors"}
MISSING = object()  # a value that is not there: the field is left out


# --- the OpenAPI document ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Operation:
    """One documented operation, with its parameters and request body resolved."""

    method: str
    template: str
    doc: dict[str, Any]
    parameters: tuple[dict[str, Any], ...]
    media_type: str | None
    body: dict[str, Any] | None

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def secured(self) -> bool:
        return bool(self.doc.get("security"))

    def params(self, where: str) -> dict[str, dict[str, Any]]:
        """Name -> schema of the parameters ``where`` (path, query, header)."""
        return {p["name"]: p.get("schema", {}) for p in self.parameters if p["in"] == where}

    def path(self, values: dict[str, str]) -> str:
        """The URL path with ``values`` for the path parameters."""
        path = self.template
        for name in self.params("path"):
            path = path.replace("{" + name + "}", values[name])
        return path


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref``."""
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def load_operations(client: Client) -> list[Operation]:
    """Every operation of the API's OpenAPI document."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.get_json()
    operations = []
    for template, item in spec["paths"].items():
        shared = [resolve(spec, p) for p in item.get("parameters", [])]
        for method, doc in item.items():
            if method == "parameters":
                continue
            own = [resolve(spec, p) for p in doc.get("parameters", [])]
            media_type = body = None
            content = doc.get("requestBody", {}).get("content", {})
            if content:
                media_type = next(iter(content))
                body = deep_resolve(spec, content[media_type]["schema"])
            operations.append(
                Operation(method.upper(), template, doc, (*shared, *own), media_type, body)
            )
    return operations


def deep_resolve(spec: dict[str, Any], node: Any) -> Any:
    """``node`` with every local ``$ref`` inside it replaced by its target."""
    if isinstance(node, dict):
        return {k: deep_resolve(spec, v) for k, v in resolve(spec, node).items()}
    if isinstance(node, list):
        return [deep_resolve(spec, v) for v in node]
    return node


# --- records to point at ---------------------------------------------------------------------


@dataclasses.dataclass
class World:
    """An organization with one of everything, and example values that point at them."""

    app: Flask
    admin: Client
    tenant: Tenant
    path_values: dict[str, str]  # path parameter -> an existing record's id
    body_ids: dict[str, int]  # body property -> an existing record's id
    # required query parameter -> a value that works (an invitation's secret)
    query_values: dict[str, str] = dataclasses.field(default_factory=dict)

    def path_for(self, operation: Operation) -> str:
        missing = set(operation.params("path")) - set(self.path_values)
        assert not missing, f"{operation.label}: add example values for {sorted(missing)}"
        return operation.path(self.path_values)


@pytest.fixture
def world(app: Flask, admin: Client, tenant: Tenant) -> World:
    suffix = secrets.token_hex(4)
    site = admin.created("/sites", {"name": f"site-{suffix}", "organization_id": tenant.id})
    group = admin.created(
        "/device-groups", {"name": f"group-{suffix}", "organization_id": tenant.id}
    )
    device = tenant.device(site_id=site["id"])
    added = admin.put(f"/device-groups/{group['id']}/devices/{device['id']}")
    assert added.status_code == 204, added.get_json()
    role = admin.created(
        "/roles",
        {"name": f"role-{suffix}", "organization_id": tenant.id, "permissions": ["devices:read"]},
    )
    user, _ = tenant.user("operator")
    card = admin.created(
        "/cards", {"uid": f"C{suffix}", "user_id": user["id"], "organization_id": tenant.id}
    )
    api_client = admin.created(
        "/clients", {"name": f"client-{suffix}", "organization_id": tenant.id}
    )
    invitation = admin.created(
        f"/devices/{device['id']}/invitations",
        {"email": f"invitee-{suffix}@bad-input.test", "level": "guest"},
    )
    # The app mails through the console backend: its outbox holds the link with the secret.
    (mailed,) = [
        m for m in app.extensions["ampfleet.mailer"].outbox if invitation["email"] in m["To"]
    ]
    secret = str(mailed.get_body(("plain",)).get_content()).split("?secret=")[1].split()[0]
    tariff = admin.created(
        "/tariffs",
        {"name": f"tariff-{suffix}", "price_per_kwh": "0.3000", "organization_id": tenant.id},
    )
    batch = admin.created(
        "/batches",
        {
            "organization_id": tenant.id,
            "hardware_family": "ac22-3p",
            "count": 1,
            "serials": [f"BI-{suffix}"],
        },
    )
    octets = [0x02, *secrets.token_bytes(3), 0, 0]
    pool = admin.created(
        "/mac-pools",
        {"organization_id": tenant.id, "first": ":".join(f"{o:02X}" for o in octets), "size": 8},
    )
    entries = admin.get("/audit-log", query_string={"organization_id": tenant.id}).get_json()
    assert entries, "the setup above should have been audited"
    return World(
        app=app,
        admin=admin,
        tenant=tenant,
        path_values={
            "organization_id": str(tenant.id),
            "site_id": str(site["id"]),
            "group_id": str(group["id"]),
            "device_id": device["id"],
            "parameter_id": "max_current_a",
            "role_id": str(role["id"]),
            "user_id": str(user["id"]),
            "assignment_id": str(user["assignments"][0]["id"]),
            "client_id": str(api_client["id"]),
            "entry_id": str(entries[0]["id"]),
            # GET /devices/{id}/commands/{command_id} has no query: any id serves as example.
            "command_id": "no-such-command",
            "card_id": str(card["id"]),
            "invitation_id": invitation["id"],
            "tariff_id": str(tariff["id"]),
            # No route under /sessions/{id} takes a body: any id serves as example.
            "session_id": "no-such-session",
            "batch_id": str(batch["id"]),
            "pool_id": str(pool["id"]),
            # /certificates/{serial}: a hex serial no certificate has.
            "serial": "a11ce",
        },
        body_ids={
            "organization_id": tenant.id,
            "site_id": site["id"],
            "device_group_id": group["id"],
            "role_id": role["id"],
            "user_id": user["id"],
            "value": 16,  # PUT /devices/{id}/parameters/max_current_a: any JSON, 6-32 here
            "price_per_kwh": "0.3000",  # POST /tariffs: a decimal string
            "hardware_family": "ac22-3p",  # POST /devices: a shipped family
            "count": 1,  # POST /batches: as many serials as given
        },
        query_values={"secret": secret},
    )


# --- the database must not change ----------------------------------------------------------


@functools.cache
def _count_statement() -> tuple[list[Table], Select[Any]]:
    tables = Base.metadata.sorted_tables
    counts = (select(func.count()).select_from(t).scalar_subquery().label(t.name) for t in tables)
    return tables, select(*counts)


def row_counts(app: Flask) -> dict[str, int]:
    """The number of rows of every table, in one round trip."""
    tables, stmt = _count_statement()
    with get_database(app).engine.connect() as conn:
        row = conn.execute(stmt).one()
    return {t.name: int(n) for t, n in zip(tables, row, strict=True)}


def contents(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: catches in-place updates, which counts do not see."""
    with get_database(app).engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in Base.metadata.sorted_tables
        }


# --- sending bad requests and judging the answers -------------------------------------------


def error_body_problem(response: TestResponse, statuses: frozenset[int] | set[int]) -> str | None:
    """What is wrong with ``response`` as an error answer with one of ``statuses``, if anything."""
    status = response.status_code
    if status >= 500:
        return "server error"
    if status not in statuses:
        return f"expected status {sorted(statuses)}"
    if response.mimetype != JSON:
        return f"error body is {response.mimetype!r}, not JSON"
    body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return "error body is not a JSON object"
    if set(body) - ERROR_KEYS:
        return f"error body has unexpected keys {sorted(set(body) - ERROR_KEYS)}"
    if body.get("code") != status or isinstance(body.get("code"), bool):
        return "error body's code is not the HTTP status"
    if body.get("status") != HTTPStatus(status).phrase:
        return "error body's status is not the HTTP status phrase"
    if not isinstance(body.get("message", ""), str):
        return "error body's message is not a string"
    if not isinstance(body.get("errors", {}), dict):
        return "error body's errors is not an object"
    return None


def names(errors: Any, path: tuple[str, ...]) -> bool:
    """True when ``errors`` names the field at ``path``: nested, or as a dotted key.

    With an empty path: true when there are errors at all (the location is named).
    """
    if not path:
        return errors is not None
    if not isinstance(errors, dict):
        return False
    if path[0] in errors and names(errors[path[0]], path[1:]):
        return True
    return ".".join(path) in errors


class Probe:
    """Sends requests expected to be refused; collects every way they are not."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.failures: list[str] = []
        self.sent = 0
        self.before = contents(world.app)

    def send(
        self,
        case: str,
        method: str,
        path: str,
        statuses: frozenset[int] | set[int],
        *,
        client: Client | None = None,
        field: tuple[str, ...] | None = None,
        location: str = "json",
        www_authenticate: bool = False,
        **kwargs: Any,
    ) -> TestResponse | None:
        """Send a request; it must be refused with one of ``statuses``, the one error body,
        naming ``location``.``field`` when given, and without changing a row."""
        client = client or self.world.admin
        label = f"{method} {path[:120]} [{case}]"
        writes = method != "GET"
        counts = row_counts(self.world.app) if writes else None
        self.sent += 1
        response = None
        try:
            response = client.request(method, path, **kwargs)
        except Exception as exc:  # TESTING propagates what would be a 500
            self.failures.append(f"{label}: raised {type(exc).__name__}: {str(exc)[:200]}")
        else:
            problem = error_body_problem(response, statuses)
            body = response.get_json(silent=True)
            errors = body.get("errors", {}) if isinstance(body, dict) else {}
            if problem is None and field is not None and not names(errors.get(location), field):
                problem = f"the errors do not name {location}.{'.'.join(field)}"
            if problem is None and www_authenticate:
                challenge = response.headers.get("WWW-Authenticate", "")
                if not challenge.startswith("Bearer"):
                    problem = "no WWW-Authenticate: Bearer challenge"
            if problem is not None:
                shown = response.get_data(as_text=True)[:300]
                self.failures.append(f"{label}: {problem}; got {response.status_code} {shown}")
        if counts is not None:
            after = row_counts(self.world.app)
            if after != counts:
                changed = {t: f"{counts[t]} -> {n}" for t, n in after.items() if counts[t] != n}
                self.failures.append(f"{label}: rows changed {changed}")
        return response

    def etag(self, path: str) -> str | None:
        """The current ETag of the resource at ``path``."""
        return self.world.admin.get(path).headers.get("ETag")

    def finish(self, minimum: int) -> None:
        """Fail listing every failure; also when rows changed in place or too little was sent."""
        after = contents(self.world.app)
        for table, rows in after.items():
            if rows != self.before[table]:
                self.failures.append(f"table {table} changed during refused requests")
        if self.sent < minimum:
            self.failures.append(f"only {self.sent} requests sent, expected at least {minimum}")
        shown = "\n".join(self.failures[:60])
        more = f"\n... and {len(self.failures) - 60} more" if len(self.failures) > 60 else ""
        assert not self.failures, f"{len(self.failures)} failure(s):\n{shown}{more}"


# --- generating values -----------------------------------------------------------------------


def unique_text(prop: dict[str, Any]) -> str:
    """A fresh valid-looking string for a string property."""
    token = secrets.token_hex(4)
    if prop.get("format") == "email":
        return f"bi-{token}@bad-input.test"
    return f"bi-{token}"


def valid_value(name: str, prop: dict[str, Any], world: World) -> Any:
    """A value the schema accepts for property ``name``."""
    if name in world.body_ids:
        return world.body_ids[name]
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type")
    if kind == "string":
        return unique_text(prop)
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return valid_body(prop, world)
    raise AssertionError(f"no example value for the required property {name!r}: add one")


def valid_body(schema: dict[str, Any], world: World) -> dict[str, Any]:
    """A small body the schema accepts: its required properties, and the organization (the
    example records, such as the role to grant, are in the tenant's organization)."""
    props = schema.get("properties", {})
    chosen = [*schema.get("required", [])]
    if "organization_id" in props and not props["organization_id"].get("readOnly"):
        chosen.append("organization_id")
    return {name: valid_value(name, props[name], world) for name in chosen}


def wrong_values(prop: dict[str, Any]) -> list[tuple[str, Any]]:
    """(what, value): values of the wrong type, or out of range, for a property."""
    values: list[tuple[str, Any]] = []
    if not prop.get("nullable"):
        values.append(("null", None))
    kind = prop.get("type")
    if "enum" in prop:
        values += [("number for an enum", 7), ("list for an enum", prop["enum"][:1])]
        values += [("object for an enum", {}), ("unknown enum value", "no-such-value")]
    elif kind == "string":
        values += [("number for a string", 12), ("list for a string", ["x"])]
        values += [("object for a string", {"x": "y"}), ("boolean for a string", True)]
    elif kind in ("integer", "number"):
        values += [("numeric string for a number", "12"), ("word for a number", "abc")]
        values += [("boolean for a number", True), ("list for a number", [1])]
        values += [("object for a number", {"x": 1}), ("NaN", float("nan"))]
        values.append(("infinity", float("inf")))
        if kind == "integer":
            values.append(("fraction for an integer", 1.5))
        if "minimum" in prop:
            values.append(("below the minimum", prop["minimum"] - 1))
        if "maximum" in prop:
            values.append(("above the maximum", prop["maximum"] + 1))
            values.append(("huge number", HUGE))
    elif kind == "boolean":
        values += [("word for a boolean", "maybe"), ("number for a boolean", 2)]
        values += [("list for a boolean", [True]), ("object for a boolean", {})]
    elif kind == "array":
        values += [("string for an array", "x"), ("object for an array", {"x": 1})]
        values += [("number for an array", 3)]
    return values


def text_values(prop: dict[str, Any]) -> list[tuple[str, Any]]:
    """(what, value): strings of the right type that cannot be stored."""
    if prop.get("type") != "string" or "enum" in prop:
        return []
    base = unique_text(prop)
    values = [("lone surrogate", base + "\ud800"), ("NUL character", base + "\x00")]
    if "maxLength" in prop:
        values.append(("over maxLength", "x" * (prop["maxLength"] + 1)))
    return values


def bad_fields(schema: dict[str, Any], world: World) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """(what, path, value): one bad value at ``path`` of an otherwise valid body."""
    props = schema.get("properties", {})
    for name, prop in props.items():
        if prop.get("readOnly"):
            continue
        for what, value in wrong_values(prop) + text_values(prop):
            yield what, (name,), value
        if prop.get("type") != "array":
            continue
        items = prop.get("items", {})
        if "maxItems" in prop:
            item = valid_value(name, items, world)
            yield "too many items", (name,), [item] * (prop["maxItems"] + 1)
        if items.get("type") == "object" or "properties" in items:
            for required in items.get("required", []):
                yield "item without a required field", (name, "0", required), MISSING
            for what, path, value in bad_fields(items, world):
                yield f"{what} in an item", (name, "0", *path), value
        else:
            for what, value in wrong_values(items) + text_values(items):
                yield f"{what} as an item", (name, "0"), value


def unknown_references(
    schema: dict[str, Any], world: World
) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """(what, path, value): ids in a body that point at no record."""
    for name, prop in schema.get("properties", {}).items():
        if prop.get("readOnly"):
            continue
        if name.endswith("_id") and prop.get("type") == "integer":
            yield "unknown id", (name,), prop.get("maximum", MAX_ID)
        items = prop.get("items", {})
        if prop.get("type") == "array" and items.get("type") == "object":
            for what, path, value in unknown_references(items, world):
                yield f"{what} in an item", (name, "0", *path), value


def placed(
    schema: dict[str, Any], world: World, base: dict[str, Any], path: tuple[str, ...], value: Any
) -> dict[str, Any]:
    """``base`` with ``value`` at ``path`` (``name.0.field``: in the first item of a list)."""
    body = copy.deepcopy(base)
    name, rest = path[0], path[1:]
    if not rest:
        body.pop(name, None)
        if value is not MISSING:
            body[name] = value
    elif rest == ("0",):
        body[name] = [value]
    else:
        items = schema["properties"][name]["items"]
        body[name] = [placed(items, world, valid_body(items, world), rest[1:], value)]
    return body


def encoded(data: Any) -> bytes:
    """JSON as a careless client sends it: NaN as is, surrogates as ``\\ud800`` escapes."""
    return json.dumps(data).encode()


# --- tests -----------------------------------------------------------------------------------


def test_only_the_token_endpoints_and_the_key_set_are_public(client: Client) -> None:
    operations = load_operations(client)
    assert len(operations) >= 40
    assert {o.label for o in operations if not o.secured} == PUBLIC
    for operation in operations:
        if operation.media_type is not None:
            assert operation.media_type in (JSON, FORM), operation.label


def json_cases(
    schema: dict[str, Any], world: World
) -> Iterator[tuple[str, bytes, frozenset[int], tuple[str, ...] | None]]:
    """(case, body, statuses, field named or None): bad JSON bodies for ``schema``."""
    base = valid_body(schema, world)
    for what, field, value in bad_fields(schema, world):
        body = placed(schema, world, base, field, value)
        yield f"{'.'.join(field)}: {what}", encoded(body), VALIDATION, field
    for what, field, value in unknown_references(schema, world):
        body = placed(schema, world, base, field, value)
        yield f"{'.'.join(field)}: {what}", encoded(body), REFERENCE, field
    for required in schema.get("required", []):
        yield f"{{}} without {required}", b"{}", VALIDATION, (required,)
        yield f"empty body without {required}", b"", VALIDATION, (required,)
    extra = {**base, "no_such_field": 1}
    yield "unknown field", encoded(extra), VALIDATION, ("no_such_field",)
    yield "array instead of object", encoded([base]), VALIDATION, ()
    yield "number instead of object", b"42", VALIDATION, ()
    yield "string instead of object", b'"text"', VALIDATION, ()
    yield "null instead of object", b"null", VALIDATION, ()
    yield "broken JSON", b'{"name": ', frozenset({400}), ()
    yield "trailing garbage", encoded(base) + b" }", frozenset({400}), ()
    yield "invalid UTF-8", b'{"name": "\xff\xfe"}', frozenset({400}), ()
    deep = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    yield "nesting deeper than the parser goes", deep, VALIDATION, ()
    yield "5000-digit number", b'{"name": ' + b"9" * 5000 + b"}", VALIDATION, ()


def test_json_bodies_with_bad_fields_are_refused_naming_the_field(
    client: Client, world: World
) -> None:
    probe = Probe(world)
    operations = [o for o in load_operations(client) if o.media_type == JSON]
    assert len(operations) >= 15
    for operation in operations:
        assert operation.body is not None
        path = world.path_for(operation)
        headers = {"Content-Type": JSON}
        if "If-Match" in operation.params("header"):
            # The real ETag: a bad value the schema let through would really be written.
            headers["If-Match"] = probe.etag(path) or ""
        for case, data, statuses, field in json_cases(operation.body, world):
            probe.send(
                case, operation.method, path, statuses, data=data, headers=headers, field=field
            )
    probe.finish(minimum=700)


def test_form_bodies_with_bad_fields_are_refused_naming_the_field(
    client: Client, world: World
) -> None:
    probe = Probe(world)
    anonymous = Client(world.admin.http)
    operations = [o for o in load_operations(client) if o.media_type == FORM]
    assert {o.label for o in operations} >= {"POST /api/v1/auth/token", "POST /api/v1/auth/revoke"}
    for operation in operations:
        schema = operation.body
        assert schema is not None
        path = world.path_for(operation)
        base = valid_body(schema, world)
        send: dict[str, Any] = {"client": anonymous, "location": "form"}
        for name, prop in schema.get("properties", {}).items():
            values = [(w, v) for w, v in text_values(prop) if w != "lone surrogate"]
            if "enum" in prop:
                values.append(("unknown enum value", "no-such-value"))
            for what, value in values:
                form = {**base, name: value}
                case = f"{name}: {what}"
                probe.send(
                    case, operation.method, path, VALIDATION, data=form, field=(name,), **send
                )
        for required in schema.get("required", []):
            probe.send(
                f"no {required}",
                operation.method,
                path,
                VALIDATION,
                data={},
                field=(required,),
                **send,
            )
            as_json = {"data": encoded(base), "content_type": JSON}
            probe.send(
                f"JSON, not a form: no {required}",
                operation.method,
                path,
                VALIDATION,
                field=(required,),
                **as_json,
                **send,
            )
        extra = {**base, "no_such_field": "1"}
        probe.send(
            "unknown field",
            operation.method,
            path,
            VALIDATION,
            data=extra,
            field=("no_such_field",),
            **send,
        )
    probe.finish(minimum=20)


def query_values(prop: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value): query string values that the parameter must refuse."""
    kind = prop.get("type")
    values: list[tuple[str, str]] = []
    if "enum" in prop:
        values.append(("unknown enum value", "no-such-value"))
    elif kind == "integer":
        values += [("word", "abc"), ("fraction", "1.5"), ("empty", "")]
        if "minimum" in prop:
            values.append(("below the minimum", str(prop["minimum"] - 1)))
            values.append(("negative", "-1"))
        if "maximum" in prop:  # page has none: a page past the end is an empty page
            values.append(("above the maximum", str(prop["maximum"] + 1)))
            values.append(("far above the maximum", str(prop["maximum"] * 1000)))
            values.append(("huge", str(HUGE)))
    elif kind == "string" and prop.get("format") == "date-time":
        values += [("not a date", "yesterday"), ("no such day", "2024-02-30T00:00:00Z")]
        values += [("before year 1 in UTC", "0001-01-01T00:00:00+14:00")]
        values += [("after year 9999 in UTC", "9999-12-31T23:59:59-14:00")]
    elif kind == "string":
        values.append(("NUL character", "a\x00b"))
        if "maxLength" in prop:
            values.append(("over maxLength", "x" * (prop["maxLength"] + 1)))
    elif kind == "boolean":
        values.append(("word", "maybe"))
    elif kind == "array":
        values.append(("item breaking the item rules", "Not A Parameter!"))
        if "maxItems" in prop:
            values.append(("too many items", ",".join(["a"] * (prop["maxItems"] + 1))))
    return values


def required_query(operation: Any, world: World) -> dict[str, str]:
    """Valid values of the required query parameters (e.g. a telemetry range's start)."""
    query = {}
    for parameter in operation.parameters:
        if parameter["in"] != "query" or not parameter.get("required"):
            continue
        name, prop = parameter["name"], parameter.get("schema", {})
        if prop.get("format") == "date-time":
            query[name] = "2026-01-01T00:00:00Z"
        elif name in world.query_values:
            query[name] = world.query_values[name]
        else:
            raise AssertionError(f"{operation.label}: no example for required query {name}")
    return query


def test_query_parameters_with_bad_values_are_refused_naming_the_parameter(
    client: Client, world: World
) -> None:
    probe = Probe(world)
    operations = [o for o in load_operations(client) if o.params("query")]
    assert len(operations) >= 9
    for operation in operations:
        path = world.path_for(operation)
        base = required_query(operation, world)
        control = world.admin.get(path, query_string=base)
        if control.status_code != 200:
            probe.failures.append(f"{operation.label}: control got {control.status_code}")
        for name, prop in operation.params("query").items():
            values = query_values(prop)
            if not values:
                probe.failures.append(f"{operation.label}: no bad values for {name} {prop}")
            for what, value in values:
                case = f"{name}: {what}"
                query = {**base, name: value}
                probe.send(
                    case,
                    operation.method,
                    path,
                    VALIDATION,
                    query_string=query,
                    field=(name,),
                    location="query",
                )
    probe.finish(minimum=200)


def unknown_path_values(prop: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value): path parameter values that name no record."""
    if prop.get("type") == "integer":
        values = [("largest id", str(prop.get("maximum", MAX_ID))), ("huge", str(HUGE))]
        values += [("zero", "0"), ("negative", "-1"), ("word", "abc"), ("fraction", "1.5")]
        return values
    return [
        ("unknown", "no-such-" + secrets.token_hex(4)),
        ("over maxLength", "x" * (prop.get("maxLength", 64) + 1)),
        ("NUL character", "a%00b"),
        ("emoji", "%F0%9F%94%8C"),
        ("invalid UTF-8", "%FF%FE"),
        ("LIKE wildcard", "%25"),
    ]


def test_unknown_ids_in_paths_answer_404(client: Client, world: World) -> None:
    probe = Probe(world)
    operations = [o for o in load_operations(client) if o.params("path")]
    assert len(operations) >= 25
    for operation in operations:
        body = {}
        if operation.media_type == JSON and operation.body is not None:
            # A valid body (and no If-Match): only the unknown record may be the problem.
            body = {"data": encoded(valid_body(operation.body, world)), "content_type": JSON}
        if required_query(operation, world):
            body["query_string"] = required_query(operation, world)
        for name, prop in operation.params("path").items():
            for what, value in unknown_path_values(prop):
                path = operation.path({**world.path_values, name: value})
                probe.send(f"{name}: {what}", operation.method, path, frozenset({404}), **body)
    probe.finish(minimum=150)


def test_oversize_bodies_answer_413(app: Flask, client: Client, world: World) -> None:
    probe = Probe(world)
    limit = app.extensions["ampfleet.settings"].max_request_bytes
    operations = [o for o in load_operations(client) if o.media_type is not None]
    assert len(operations) >= 17
    for operation in operations:
        path = world.path_for(operation)
        filler = "x" * limit
        if operation.media_type == JSON:
            data, kind = encoded({"name": filler}), JSON
        else:
            data, kind = f"grant_type=password&token={filler}".encode(), FORM
        headers = {"Content-Type": kind, "If-Match": probe.etag(path) or "*"}
        probe.send(
            "oversize body", operation.method, path, frozenset({413}), data=data, headers=headers
        )
    probe.finish(minimum=17)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def bad_tokens(app: Flask, world: World) -> list[tuple[str, dict[str, str]]]:
    """(what, headers): credentials that must not get in."""
    service = app.extensions["ampfleet.tokens"]
    key = service.key
    me = world.admin.get("/auth/me").get_json()
    now = int(time.time())
    claims = {
        "iss": service.issuer,
        "aud": AUDIENCE,
        "sub": f"user:{me['id']}",
        "org": me["organization_id"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }

    def signed(**changes: Any) -> str:
        payload = {k: v for k, v in {**claims, **changes}.items() if v is not None}
        return jwt.encode(payload, key.private_key, algorithm="RS256", headers={"kid": key.kid})

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": key.kid})
    unsigned = _segments({"alg": "none", "typ": "JWT"}, claims) + "."
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_input = _segments({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims)
    hs_mac = hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()
    genuine = signed().split(".")
    tampered_claims = {**claims, "sub": f"user:{world.path_values['user_id']}"}
    tampered = f"{genuine[0]}.{_b64(json.dumps(tampered_claims).encode())}.{genuine[2]}"
    tokens = {
        "garbage": "not-a-jwt",
        "three garbage segments": "a.b.c",
        "signed by another key": forged,
        "alg none": unsigned,
        "HS256 keyed with the public key": f"{hs_input}.{_b64(hs_mac)}",
        "tampered payload": tampered,
        "expired": signed(iat=now - 7200, nbf=now - 7200, exp=now - 3600),
        "not yet valid": signed(nbf=now + 3600),
        "without expiry": signed(exp=None),
        "wrong audience": signed(aud="someone-else"),
        "wrong issuer": signed(iss="https://issuer.invalid"),
        "unknown user": signed(sub=f"user:{MAX_ID}"),
        "unknown client": signed(sub=f"client:{MAX_ID}"),
        "subject id out of range": signed(sub=f"user:{HUGE}"),
        "subject id in superscript digits": signed(sub="user:\u00b2"),
        "malformed subject": signed(sub="root"),
        "another organization": signed(org=world.tenant.id),
        "organization as a string": signed(org=str(me["organization_id"])),
    }
    headers = [(what, {"Authorization": f"Bearer {token}"}) for what, token in tokens.items()]
    headers += [("no Authorization", {}), ("empty bearer token", {"Authorization": "Bearer "})]
    headers += [("Basic credentials", {"Authorization": "Basic " + _b64(b"admin:secret")})]
    return headers


def test_missing_expired_and_forged_tokens_answer_401(
    app: Flask, client: Client, world: World
) -> None:
    probe = Probe(world)
    anonymous = Client(world.admin.http)
    operations = [o for o in load_operations(client) if o.secured]
    assert len(operations) >= 40
    credentials = bad_tokens(app, world)
    for operation in operations:
        path = world.path_for(operation)
        for what, headers in credentials:
            probe.send(
                what,
                operation.method,
                path,
                frozenset({401}),
                client=anonymous,
                headers=headers,
                www_authenticate=True,
            )
    probe.finish(minimum=800)


# --- regressions found by fuzzing the OpenAPI document (issue 13) ---------------------------


def test_tariff_windows_with_an_unknown_numeric_key_are_refused_naming_it(world: World) -> None:
    admin, tenant = world.admin, world.tenant
    body = {"name": "night", "price_per_kwh": "0.3000", "organization_id": tenant.id}
    created = admin.post("/tariffs", json={**body, "windows": [{"0": 1}]})
    assert error_body_problem(created, {422}) is None, created.get_json()
    assert names(created.get_json()["errors"]["json"], ("windows", "0", "0"))
    tariff_id = world.path_values["tariff_id"]
    patched = admin.patch(f"/tariffs/{tariff_id}", json={"windows": [{"0": 1}]})
    assert error_body_problem(patched, {422}) is None, patched.get_json()
    assert names(patched.get_json()["errors"]["json"], ("windows", "0", "0"))


def test_a_site_with_an_overlong_timezone_is_refused_naming_it(world: World) -> None:
    response = world.admin.post(
        "/sites",
        json={"name": "far-away", "organization_id": world.tenant.id, "timezone": "A" * 300},
    )
    assert error_body_problem(response, {422}) is None, response.get_json()
    assert names(response.get_json()["errors"]["json"], ("timezone",))


@pytest.mark.parametrize("control", ["\x1d", "\u2028", "\x85", "\r\n"])
def test_an_invitation_to_a_device_with_a_control_character_in_its_name_is_mailed(
    world: World, control: str
) -> None:
    admin, tenant = world.admin, world.tenant
    device = tenant.device(name=f"Garage{control}left")
    email = f"invitee-{secrets.token_hex(4)}@bad-input.test"
    response = admin.post(
        f"/devices/{device['id']}/invitations", json={"email": email, "level": "guest"}
    )
    assert response.status_code == 201, response.get_json()
    (mailed,) = [m for m in world.app.extensions["ampfleet.mailer"].outbox if email in m["To"]]
    assert "Garage" in mailed["Subject"] and "left" in mailed["Subject"]
    assert len(str(mailed["Subject"]).splitlines()) == 1


def test_users_that_never_signed_in_match_the_documented_schema(world: World) -> None:
    admin = world.admin
    email = f"never-{secrets.token_hex(4)}@bad-input.test"
    body = {"email": email, "password": PASSWORD, "organization_id": world.tenant.id, "roles": []}
    assert admin.created("/users", body)["last_login_at"] is None
    users = admin.get("/users", query_string={"organization_id": world.tenant.id}).get_json()
    assert any(u["last_login_at"] is None for u in users)
    spec = admin.get("/openapi.json").get_json()
    for name, schema in spec["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            if prop.get("format") == "date-time" and field == "last_login_at":
                assert prop.get("nullable") or "null" in prop.get("type", []), (name, field)
