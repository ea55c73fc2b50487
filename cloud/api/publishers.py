"""The app's publishers: one per process, kept in ``app.extensions`` (tests swap them there).

Domain code takes a publisher as an argument; only the HTTP layer knows where the app keeps it.
Authorization lists have none here: the API records requests and the charging worker publishes
them over its own connection (``cloud.access.outbox``).
"""

from __future__ import annotations

from flask import current_app

from cloud.commands.publisher import EXTENSION as COMMANDS
from cloud.commands.publisher import CommandPublisher, MqttCommandPublisher
from cloud.configuration.publisher import EXTENSION as DESIRED
from cloud.configuration.publisher import DesiredPublisher, MqttPublisher
from cloud.devicelink.endpoint import service_endpoint
from cloud.settings import Settings


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


def desired_publisher() -> DesiredPublisher:
    """The app's desired-document publisher (the service account on ``broker_url``)."""
    found: DesiredPublisher | None = current_app.extensions.get(DESIRED)
    if found is None:
        found = MqttPublisher(service_endpoint(_settings()))
        current_app.extensions[DESIRED] = found
    return found


def command_publisher() -> CommandPublisher:
    """The app's command publisher (the service account on ``broker_url``)."""
    found: CommandPublisher | None = current_app.extensions.get(COMMANDS)
    if found is None:
        found = MqttCommandPublisher(service_endpoint(_settings()))
        current_app.extensions[COMMANDS] = found
    return found
