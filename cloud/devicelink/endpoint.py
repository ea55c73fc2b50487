"""Where and as whom a cloud service connects to the broker."""

from __future__ import annotations

import dataclasses
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from cloud.settings import Settings


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect."""

    host: str
    port: int
    tls: bool
    username: str
    password: str
    ca_file: str = ""

    @classmethod
    def from_url(cls, url: str, username: str, password: str, ca_file: str = "") -> Endpoint:
        """From ``mqtt://host:port`` or ``mqtts://host:port``."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            parts.hostname, parts.port or (8883 if tls else 1883), tls, username, password, ca_file
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS context of an ``mqtts`` endpoint (its CA file, or the system's); False when
        the endpoint is plain."""
        if not self.tls:
            return False
        return ssl.create_default_context(cafile=self.ca_file or None)

    @property
    def where(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"


def service_endpoint(settings: Settings) -> Endpoint:
    """The broker endpoint of the cloud's service account (API publishers and workers)."""
    from cloud.devicelink.accounts import service_password

    return Endpoint.from_url(
        settings.broker_url,
        settings.broker_service_user,
        service_password(settings),
        settings.broker_tls_ca_file,
    )


def shared(topic: str, group: str, supported: bool) -> str:
    """``$share/group/topic`` where the broker splits shared subscriptions (MQTT 5 4.8.2;
    Mosquitto and EMQX also for 3.1.1 clients); the plain topic on amqtt, which cannot."""
    return f"$share/{group}/{topic}" if supported else topic
