"""Fuzzing the API from its own OpenAPI document with schemathesis.

Every documented operation gets a bounded number of generated requests, valid and invalid,
sent as the platform admin. A run fails on any 5xx, a status code the operation does not
declare (flask-smorest's catch-all ``default`` does not count as declaring one), a content type
or a body that breaks the declared schema.

Generated ids rarely name a record, so path parameters are often swapped for ids the run knows:
records made before the run and every record a fuzzed POST creates. The fuzzer's own user, its
platform-admin assignment, the platform-admin role and the platform organization are among
them, so the operations that could lock the fuzzer out (deleting or deactivating itself,
unassigning its platform-admin role, stripping the role's permissions, deleting its
organization) are fuzzed too: they must refuse. No fuzzed request may make a second platform
admin (that would make locking out the first one legitimate), and at the end the fuzzer's token
must still work and still be the platform admin's.

The app runs with TESTING on, so a would-be 500 propagates as an exception and fails the case.

One pytest test per operation and generation mode, each a hypothesis test over schemathesis'
strategy for the operation: schemathesis' own lazy pytest loader (``from_fixture``) sets
``Function._nodeid``, which pytest 9 no longer has. The run is on SQLite only: on MariaDB it takes
over ten minutes (a commit per fuzzed write); one such run, cut at ten minutes after 186 of
the 187 tests, found nothing more.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from cloud.app import create_app
from cloud.charging import live
from cloud.db import get_database
from cloud.db.migrate import upgrade
from cloud.identity.seed import ensure_admin, sync_catalogue
from cloud.organizations.models import PLATFORM_SLUG
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Tenant, role_id, settings_for

#: Generated requests per operation and generation mode: the whole run stays within minutes.
MAX_EXAMPLES = 12
LOW_PRIVILEGE_EXAMPLES = 4
#: How often a path parameter is replaced by a known id, and how often by the fuzzer's own.
KNOWN_ID_RATE = 0.7
OWN_ID_RATE = 0.2
#: The collection a created record's id is a path parameter of.
COLLECTIONS = {
    "organizations": "organization_id",
    "sites": "site_id",
    "users": "user_id",
    "role-assignments": "assignment_id",
    "roles": "role_id",
    "clients": "client_id",
    "devices": "device_id",
    "device-groups": "group_id",
    "commands": "command_id",
    "sessions": "session_id",
    "tariffs": "tariff_id",
    "invitations": "invitation_id",
    "cards": "card_id",
}


#: The ways the fuzzer could lock itself out, each of which the run must try.
LOCKOUTS = (
    "delete itself",
    "deactivate itself",
    "unassign its platform-admin role",
    "delete the platform-admin role",
    "edit the platform-admin role",
    "delete the platform organization",
)


class Fuzzer:
    """The fuzzer's identity, the ids it knows and what became of its lock-out attempts."""

    def __init__(self, app: Flask, admin: Client) -> None:
        self.app = app
        self.admin = admin
        self.known: dict[str, list[Any]] = {name: [] for name in COLLECTIONS.values()}
        self.random = random.Random(13)
        self.platform_admin_role = role_id(admin, "platform-admin")
        self.admin_id = 0
        self.operator: Client | None = None  # a low-privilege user of one organization
        self.admin_assignment = 0
        self.platform_org = 0
        #: lock-out attempt -> the status of each time it was made
        self.lockouts: dict[str, list[int]] = {}

    def learn(self, name: str, value: Any) -> None:
        if value is not None and value not in self.known[name]:
            self.known[name].append(value)

    def headers(self, client: Client | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {(client or self.admin).token}"}

    def own_ids(self) -> dict[str, Any]:
        """The path parameters that name the fuzzer itself or what keeps it in."""
        return {
            "user_id": self.admin_id,
            "assignment_id": self.admin_assignment,
            "role_id": self.platform_admin_role,
            "organization_id": self.platform_org,
        }

    def explicit(self, label: str) -> dict[str, Any] | None:
        """The lock-out attempt on operation ``label``, made once whatever the fuzzing drew."""
        own = self.own_ids()
        cases: dict[str, dict[str, Any]] = {
            "DELETE /api/v1/users/{user_id}": {},
            "PATCH /api/v1/users/{user_id}": {"body": {"is_active": False}},
            "DELETE /api/v1/users/{user_id}/role-assignments/{assignment_id}": {},
            "DELETE /api/v1/roles/{role_id}": {},
            "PATCH /api/v1/roles/{role_id}": {"body": {"permissions": []}},
            "DELETE /api/v1/organizations/{organization_id}": {},
        }
        if label not in cases:
            return None
        template = label.split(" ", 1)[1]
        names = [name for name in own if "{" + name + "}" in template]
        return {"path_parameters": {name: own[name] for name in names}, **cases[label]}

    def prepare(self, case: schemathesis.Case, explicit: bool = False) -> None:
        """Point path parameters at known records, with their current ETag most of the time (a
        write without one stops at 428 and never reaches the view); lean towards the lock-out
        variants of a write on the fuzzer itself; never grant platform-admin to anyone."""
        own = self.own_ids()
        for name in [] if explicit else list(case.path_parameters or {}):
            pool = self.known.get(name)
            draw = self.random.random()
            if name in own and draw < OWN_ID_RATE:
                case.path_parameters[name] = own[name]
            elif pool and draw < KNOWN_ID_RATE:
                case.path_parameters[name] = self.random.choice(pool)
        params = case.path_parameters or {}
        if (
            not explicit
            and params.get("user_id") == self.admin_id
            and "assignment_id" in params
            and self.random.random() < KNOWN_ID_RATE
        ):
            params["assignment_id"] = self.admin_assignment  # its own, not somebody else's
        if case.method.upper() in {"PATCH", "PUT", "DELETE"} and (
            explicit or self.random.random() < 0.9
        ):
            current = self.admin.get(case.formatted_path)
            if current.status_code == 200 and current.headers.get("ETag"):
                case.headers = {**(case.headers or {}), "If-Match": current.headers["ETag"]}
        lockout = self.lockout(case)
        if lockout and isinstance(case.body, dict) and not explicit and self.random.random() < 0.5:
            if lockout == "deactivate itself":
                case.body["is_active"] = False
            elif lockout == "edit the platform-admin role":
                case.body["permissions"] = []
        self._no_second_admin(case.body)

    def lockout(self, case: schemathesis.Case) -> str | None:
        """Which lock-out of the fuzzer ``case`` attempts, if any."""
        method, path, params = case.method.upper(), case.path, case.path_parameters or {}
        if path == "/api/v1/users/{user_id}" and params.get("user_id") == self.admin_id:
            if method == "DELETE":
                return "delete itself"
            if method == "PATCH":
                return "deactivate itself"
        if (
            method == "DELETE"
            and path == "/api/v1/users/{user_id}/role-assignments/{assignment_id}"
            and params.get("user_id") == self.admin_id
            and params.get("assignment_id") == self.admin_assignment
        ):
            return "unassign its platform-admin role"
        if path == "/api/v1/roles/{role_id}" and params.get("role_id") == self.platform_admin_role:
            if method == "DELETE":
                return "delete the platform-admin role"
            if method == "PATCH":
                return "edit the platform-admin role"
        if (
            method == "DELETE"
            and path == "/api/v1/organizations/{organization_id}"
            and params.get("organization_id") == self.platform_org
        ):
            return "delete the platform organization"
        return None

    @staticmethod
    def _reaches_the_rail(lockout: str, case: schemathesis.Case) -> bool:
        """The attempt is the dangerous one and well-formed enough to reach the view's rail."""
        body = case.body if isinstance(case.body, dict) else {}
        if lockout == "deactivate itself" and body.get("is_active") is not False:
            return False
        if lockout == "edit the platform-admin role" and body.get("permissions") != []:
            return False
        # Every lock-out route but the assignment's wants the record's ETag first.
        return "{assignment_id}" in case.path or "If-Match" in (case.headers or {})

    def _no_second_admin(self, body: Any) -> None:
        if isinstance(body, dict):
            if body.get("role_id") == self.platform_admin_role:
                body["role_id"] = self.platform_admin_role + 1
            for value in body.values():
                self._no_second_admin(value)
        elif isinstance(body, list):
            for value in body:
                self._no_second_admin(value)

    def record(self, case: schemathesis.Case, response: Any) -> None:
        """Note a lock-out attempt's answer; learn the id of what a fuzzed POST created."""
        lockout = self.lockout(case)
        if lockout and self._reaches_the_rail(lockout, case):
            self.lockouts.setdefault(lockout, []).append(response.status_code)
        if case.method.upper() != "POST" or response.status_code != 201:
            return
        collection = case.path.rstrip("/").rsplit("/", 1)[-1]
        name = COLLECTIONS.get(collection)
        body = response.json() if response.content else None
        if name and isinstance(body, dict):
            self.learn(name, body.get("id"))


STREAM = live.stream


def short_stream(view: Any, **kwargs: Any) -> Iterator[bytes]:
    """The live view's real stream, ended after a second and a half: the setting's floor (10 s,
    for production) would make every fuzzed request to it last that long."""
    kwargs["max_seconds"] = 1.5
    return STREAM(view, **kwargs)


@pytest.fixture(scope="module")
def fuzz_app() -> Iterator[Flask]:
    """The API on its own SQLite database, seeded, for this module only."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(live, "stream", short_stream)
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'ampfleet.db'}"
        upgrade(url)
        app = create_app(settings_for(data_dir, url))
        app.config["TESTING"] = True
        with get_database(app).transaction() as session:
            sync_catalogue(session)
            ensure_admin(
                session, app.extensions["ampfleet.hasher"], ADMIN_EMAIL, ADMIN_PASSWORD, data_dir
            )
        yield app


@pytest.fixture(scope="module")
def fuzzer(fuzz_app: Flask) -> Fuzzer:
    """The platform admin, signed in, and a few records of every kind it may fuzz."""
    admin = Client(fuzz_app.test_client()).signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
    fuzzer = Fuzzer(fuzz_app, admin)
    me = admin.get("/auth/me").get_json()
    fuzzer.admin_id = me["id"]
    fuzzer.learn("user_id", me["id"])
    for assignment in admin.get(f"/users/{me['id']}/role-assignments").get_json():
        fuzzer.learn("assignment_id", assignment["id"])
        if assignment["role_id"] == fuzzer.platform_admin_role:
            fuzzer.admin_assignment = assignment["id"]
    for org in admin.get("/organizations").get_json():
        fuzzer.learn("organization_id", org["id"])
        if org["slug"] == PLATFORM_SLUG:
            fuzzer.platform_org = org["id"]
    assert fuzzer.admin_assignment and fuzzer.platform_org
    for role in admin.get("/roles").get_json():
        fuzzer.learn("role_id", role["id"])
    tenant = Tenant.create(admin)
    fuzzer.learn("organization_id", tenant.id)
    user, fuzzer.operator = tenant.user("operator")
    fuzzer.learn("user_id", user["id"])
    for assignment in admin.get(f"/users/{user['id']}/role-assignments").get_json():
        fuzzer.learn("assignment_id", assignment["id"])
    fuzzer.learn("device_id", tenant.device()["id"])
    site = admin.created("/sites", {"name": "Depot", "organization_id": tenant.id})
    fuzzer.learn("site_id", site["id"])
    return fuzzer


def documented_operations() -> list[str]:
    """The label (``METHOD /path``) of every operation the app documents, read at collection."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(settings_for(Path(tmp), f"sqlite:///{Path(tmp) / 'spec.db'}"))
        spec = app.test_client().get("/api/v1/openapi.json").get_json()
    return [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    ]


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Flask) -> Any:
    """The OpenAPI document the app serves, as schemathesis sees it."""
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app)


def status_code_declared(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """The status code is one the operation declares by number, not only by ``default``."""
    responses = case.operation.definition.raw.get("responses", {})
    declared = {str(code) for code in responses if code != "default"}
    status = str(response.status_code)
    if status not in declared and f"{status[0]}XX" not in declared:
        raise AssertionError(
            f"{case.method} {case.path} answered {status}, which it does not declare "
            f"(declared: {sorted(declared)}): {response.text[:300]}"
        )
    return None


CHECKS = [
    not_a_server_error,
    status_code_declared,
    content_type_conformance,
    response_schema_conformance,
]


def send(
    fuzzer: Fuzzer, case: schemathesis.Case, explicit: bool = False, as_: Client | None = None
) -> None:
    """Send one case as the fuzzer (or ``as_``) and check the answer against the document."""
    fuzzer.prepare(case, explicit)
    response = case.call(headers=fuzzer.headers(as_))
    case.validate_response(response, checks=CHECKS)
    fuzzer.record(case, response)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("label", documented_operations())
def test_fuzz(label: str, mode: GenerationMode, api_schema: Any, fuzzer: Fuzzer) -> None:
    """Every generated request is answered within the operation's declared responses."""
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        # No shrinking: a failure is reported as found, and the run's time stays bounded.
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        send(fuzzer, case)

    lockout = fuzzer.explicit(label)
    if lockout is not None and mode == GenerationMode.POSITIVE:
        send(fuzzer, operation.Case(**lockout), explicit=True)
    try:
        fuzz()
    except Unsatisfiable:
        # Negative mode on an operation with no parameter, body or token to spoil (the JWKS).
        pytest.skip("nothing in this operation can be made invalid")


@pytest.mark.parametrize("label", documented_operations())
def test_fuzz_as_a_low_privilege_user(label: str, api_schema: Any, fuzzer: Fuzzer) -> None:
    """An operator of one organization gets declared answers too (403, 404...), and no more."""
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @settings(
        max_examples=LOW_PRIVILEGE_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def fuzz(case: schemathesis.Case) -> None:
        send(fuzzer, case, as_=fuzzer.operator)

    fuzz()


def test_the_fuzzer_is_still_in(fuzzer: Fuzzer) -> None:
    """Every way the fuzzer tried to lock itself out was refused: its token still works and its
    user is still the only, active platform admin."""
    me = fuzzer.admin.get("/auth/me")
    assert me.status_code == 200, me.get_json()
    assert me.get_json()["id"] == fuzzer.admin_id
    user = fuzzer.admin.get(f"/users/{fuzzer.admin_id}").get_json()
    assert user["is_active"] is True
    assignments = fuzzer.admin.get(f"/users/{fuzzer.admin_id}/role-assignments").get_json()
    assert fuzzer.platform_admin_role in [a["role_id"] for a in assignments]
    role = fuzzer.admin.get(f"/roles/{fuzzer.platform_admin_role}").get_json()
    assert role["permissions"]
    assert fuzzer.admin.get(f"/organizations/{fuzzer.platform_org}").status_code == 200
    # The run did try each of them, past the ETag check, and each was refused.
    assert sorted(fuzzer.lockouts) == sorted(LOCKOUTS)
    for lockout, statuses in fuzzer.lockouts.items():
        assert 409 in statuses and all(400 <= s < 500 for s in statuses), (lockout, statuses)
