"""The API's Prometheus endpoint: fleet gauges computed from the records at scrape time (so
every gunicorn worker answers the same), plus this process's own metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from cloud.api.auth import requires
from cloud.db import Database, get_database
from cloud.devices.models import Device, DeviceStatus
from cloud.organizations.models import Organization


class FleetCollector(Collector):
    """Devices registered and online, per organization."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        devices = GaugeMetricFamily(
            "ampfleet_devices", "Devices in the registry.", labels=["organization"]
        )
        online = GaugeMetricFamily(
            "ampfleet_devices_online",
            "Devices whose last status is online.",
            labels=["organization"],
        )
        stmt = (
            select(
                Organization.slug,
                func.count(Device.id),
                func.sum(case((DeviceStatus.online.is_(True), 1), else_=0)),
            )
            .select_from(Device)
            .join(Organization)
            .outerjoin(DeviceStatus)
            .group_by(Organization.slug)
        )
        with self.database.transaction() as session:
            for slug, total, up in session.execute(stmt):
                devices.add_metric([slug], int(total or 0))
                online.add_metric([slug], int(up or 0))
        yield devices
        yield online


def init_app(app: Flask) -> None:
    """Serve ``/metrics`` (needs ``metrics:read``: Prometheus uses an API client's token)."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(get_database(app)))
    ProcessCollector(registry=registry)

    @app.get("/metrics")
    @requires("metrics:read")
    def metrics() -> Any:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
