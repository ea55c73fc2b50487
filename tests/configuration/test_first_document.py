"""The API and the config worker may create a device's configuration document at the same
moment (a first change, a first report): neither may fail for it."""

from __future__ import annotations

import threading

from flask import Flask

from cloud.configuration.service import configuration
from cloud.db import get_database
from tests.helpers import Tenant


def test_two_transactions_creating_the_first_document_both_succeed(
    app: Flask, tenant: Tenant
) -> None:
    device_id = tenant.device()["id"]
    database = get_database(app)
    first = database.session()
    configuration(first, device_id)  # inserted, not committed: the row is locked
    outcome: list[object] = []

    def second() -> None:
        with database.transaction() as session:
            try:
                outcome.append(configuration(session, device_id).device_id)
            except Exception as exc:  # the failure under test: a duplicate key
                outcome.append(exc)

    racer = threading.Thread(target=second)
    racer.start()
    racer.join(0.5)  # the second waits for the first's lock (or the database's write lock)
    first.commit()
    first.close()
    racer.join(30)
    assert outcome == [device_id]
