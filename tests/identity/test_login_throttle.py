"""Password logins are throttled per account and per client address, and audited."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from flask import Flask

from tests.helpers import PASSWORD, Client, Tenant

TOKEN = "/auth/token"


def _address() -> str:
    return f"198.51.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def _login(client: Client, email: str, password: str, address: str) -> Any:
    return client.post(
        TOKEN,
        data={"grant_type": "password", "username": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def test_guessing_one_account_is_throttled_while_its_owner_still_signs_in(
    tenant: Tenant, client: Client
) -> None:
    user, _ = tenant.user()
    attacker, owner = _address(), "192.0.2.10"
    for guess in range(5):
        wrong = _login(client, user["email"], f"guess-number-{guess}", attacker)
        assert wrong.status_code == 400, wrong.get_json()
    throttled = _login(client, user["email"], "guess-number-6", attacker)
    assert throttled.status_code == 429, throttled.get_json()
    assert int(throttled.headers["Retry-After"]) >= 1
    assert "too many failed logins" in throttled.get_json()["message"]
    # Throttled means not even checked: the right password from the attacker's address waits too.
    assert _login(client, user["email"], PASSWORD, attacker).status_code == 429
    assert _login(client, user["email"], PASSWORD, owner).status_code == 200
    entries = tenant.admin.get(
        "/audit-log",
        query_string={"object_type": "user", "object_id": str(user["id"]), "page_size": 100},
    ).get_json()
    actions = [e["action"] for e in entries]
    assert actions.count("auth.login_failed") == 5
    assert actions.count("auth.login_throttled") == 2
    assert actions.count("auth.login") == 2  # tenant.user() signed in once, the owner once
    refused = next(e for e in entries if e["action"] == "auth.login_throttled")
    assert refused["source_ip"] == attacker and refused["organization_id"] == tenant.id
    assert refused["details"]["retry_after"] >= 1
    assert "guess-number" not in str(entries) and PASSWORD not in str(entries)


def test_an_unknown_account_is_throttled_and_audited_too(admin: Client, client: Client) -> None:
    email, attacker = f"{secrets.token_hex(4)}@nowhere.test", _address()
    answers = [_login(client, email, "whatever-it-is", attacker).status_code for _ in range(6)]
    assert answers == [400] * 5 + [429]
    entries = admin.get(
        "/audit-log", query_string={"action": "auth.login_failed", "page_size": 100}
    ).get_json()
    mine = [e for e in entries if e["details"].get("email") == email]
    assert len(mine) == 5 and all(e["source_ip"] == attacker for e in mine)


def test_a_reused_refresh_token_is_audited(tenant: Tenant, client: Client) -> None:
    user, _ = tenant.user()
    first = _login(client, user["email"], PASSWORD, "192.0.2.11").get_json()
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    assert client.post(TOKEN, data=form).status_code == 200
    assert client.post(TOKEN, data=form).status_code == 400
    entries = tenant.admin.get(
        "/audit-log", query_string={"object_type": "user", "object_id": str(user["id"])}
    ).get_json()
    reused = [e for e in entries if e["action"] == "auth.refresh_reused"]
    assert len(reused) == 1 and reused[0]["organization_id"] == tenant.id
    assert first["refresh_token"].split(".")[-1] not in str(entries)


class _Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _policy(**overrides: int) -> Any:
    from cloud.identity.throttle import ThrottlePolicy

    values = dict(
        max_failures=3,
        max_failures_per_address=5,
        max_failures_per_account=8,
        block_seconds=10,
        max_block_seconds=40,
        window=100,
    )
    return ThrottlePolicy(**{**values, **overrides})


def _retry_after(throttle: Any, session: Any, email: str, address: str) -> int:
    from cloud.identity import LoginThrottledError

    try:
        throttle.check(session, email, address)
    except LoginThrottledError as exc:
        return exc.retry_after
    return 0


def test_the_delay_grows_is_capped_and_is_forgotten(app: Flask) -> None:
    from cloud.db import get_database
    from cloud.identity.throttle import LoginThrottle, throttle_rows

    clock, email, address = _Clock(), f"{secrets.token_hex(4)}@x.test", _address()
    throttle = LoginThrottle(_policy(), clock=clock)
    with get_database(app).transaction() as session:
        for _ in range(3):
            assert _retry_after(throttle, session, email, address) == 0
            throttle.failed(session, email, address)
        assert _retry_after(throttle, session, email, address) == 10
        delays = []
        for _ in range(4):
            clock.advance(_retry_after(throttle, session, email, address))
            assert _retry_after(throttle, session, email, address) == 0
            throttle.failed(session, email, address)
            delays.append(_retry_after(throttle, session, email, address))
        assert delays == [20, 40, 40, 40]
        assert throttle_rows(session, email, address) == 3  # the pair, the address, the account
        clock.advance(141)  # the block and then the window passed: the rows are purged
        throttle.failed(session, f"other-{email}", _address())
        assert throttle_rows(session, email, address) == 0
        assert _retry_after(throttle, session, email, address) == 0


def test_one_address_trying_many_accounts_is_throttled(app: Flask) -> None:
    from cloud.db import get_database
    from cloud.identity.throttle import LoginThrottle

    clock, address = _Clock(), _address()
    throttle = LoginThrottle(_policy(), clock=clock)
    with get_database(app).transaction() as session:
        for n in range(5):
            throttle.failed(session, f"{n}-{secrets.token_hex(4)}@x.test", address)
        assert _retry_after(throttle, session, "fresh@x.test", address) == 10
        assert _retry_after(throttle, session, "fresh@x.test", _address()) == 0


def test_many_addresses_guessing_one_account_do_not_lock_its_owner_out(app: Flask) -> None:
    from cloud.db import get_database
    from cloud.identity.throttle import LoginThrottle

    clock, email = _Clock(), f"{secrets.token_hex(4)}@x.test"
    throttle = LoginThrottle(_policy(), clock=clock)
    botnet = [_address() for _ in range(8)]
    with get_database(app).transaction() as session:
        for address in botnet:
            throttle.failed(session, email, address)
        # The account is under attack: every address that guessed it waits ...
        assert all(_retry_after(throttle, session, email, a) == 10 for a in botnet)
        # ... but its owner, from an address that never failed, is let through.
        assert _retry_after(throttle, session, email, "192.0.2.99") == 0
