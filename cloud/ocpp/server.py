"""The OCPP WebSocket listener: handshake (subprotocol, security profile, whitelist), then one
``BridgedCharger`` per connection, and the bookkeeping of who is held here.

* Subprotocols (OCPP-J 1.6 3.1.2, 2.0.1 part 4 3.1.2): ``ocpp2.0.1`` is preferred when
  offered, then ``ocpp1.6``. A charger offering only others gets 400; one offering none
  speaks 1.6 or gets 400, as ``ocpp_no_subprotocol`` says (many 1.6 chargers send none).
* The charger id is the last segment of the URL path (``/ocpp/CP-0001``).
* Admission is the registry's (``registry.Gatekeeper``): 404 unknown, 403 suspended or
  decommissioned, 401 wrong password or certificate; refused before the WebSocket opens, so a
  refused charger costs no session.
* A charger that connects again replaces its old socket: the old one is closed, and only the
  new one speaks for the charger (the old one publishes no ``offline`` when it goes).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from cloud.ocpp import HandshakeRefusedError, metrics
from cloud.ocpp.context import SessionContext
from cloud.ocpp.meter import MeterMap
from cloud.ocpp.registry import Admission, Gatekeeper
from cloud.ocpp.session import BridgedCharger
from cloud.ocpp.v16.session import Charger16
from cloud.ocpp.v201.session import Charger201
from parameters import Family, family_of

log = logging.getLogger(__name__)

# The charger class of each subprotocol, in order of preference: one line per version.
CHARGERS: dict[str, type[BridgedCharger]] = {
    Charger201.subprotocol: Charger201,
    Charger16.subprotocol: Charger16,
}
MAX_MESSAGE = 256 * 1024  # OCPP messages are small; a certificate chain is the largest
FALLBACK_FAMILY = "ocpp-generic"


def charger_id_of(path: str) -> str:
    """The last segment of the request path, URL-decoded (``/ocpp/CP%2D1`` -> ``CP-1``)."""
    segments = [s for s in urlsplit(path).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""


def certificate_cn(connection: ServerConnection) -> str | None:
    """The CN of the client certificate the TLS layer verified (profile 3), if any."""
    peer = connection.transport.get_extra_info("peercert") if connection.transport else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def tls_context(
    profile: int, cert_file: str, key_file: str, client_ca: str
) -> ssl.SSLContext | None:
    """The listener's TLS context: none for profile 1, server TLS for 2, mutual TLS for 3."""
    if profile == 1:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # OCPP security: TLS 1.2 or later
    context.load_cert_chain(cert_file, key_file)
    if profile == 3:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


class FamilyCache:
    """Families (and their meter maps) by id; an unknown family reads as ocpp-generic."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Family | None, MeterMap]] = {}

    def get(self, family_id: str) -> tuple[Family | None, MeterMap]:
        """The family and its meter map."""
        found = self._cache.get(family_id)
        if found is None:
            from cloud.configuration import UnknownFamilyError

            try:
                family: Family | None = family_of(family_id)
            except UnknownFamilyError:
                family = None
            assert family is not None or family_id != FALLBACK_FAMILY, "ocpp-generic ships"
            meters = MeterMap(family) if family else self.get(FALLBACK_FAMILY)[1]
            found = (family, meters)
            self._cache[family_id] = found
        return found


class OcppServer:
    """Accepts chargers and runs their sessions on the bridge's loop."""

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        context: SessionContext,
        *,
        profile: int,
        ssl_context: ssl.SSLContext | None,
        no_subprotocol: str = "ocpp1.6",
        ping_interval: int = 30,
    ) -> None:
        self.gatekeeper = gatekeeper
        self.context = context
        self.profile = profile
        self.ssl_context = ssl_context
        self.no_subprotocol = no_subprotocol
        self.ping_interval = ping_interval or None
        self.sessions: dict[str, BridgedCharger] = {}
        self.families = FamilyCache()
        self._admitted: dict[ServerConnection, Admission] = {}
        self._server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the port actually bound (``port`` 0 picks a free one)."""
        self._server = await serve(
            self._serve,
            host,
            port,
            ssl=self.ssl_context,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            compression=None,  # per-message deflate costs ~64 KiB per socket for small frames
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            max_size=MAX_MESSAGE,
        )
        bound: int = next(iter(self._server.sockets)).getsockname()[1]
        return bound

    async def stop(self) -> None:
        """Close every connection (each session publishes its charger offline) and stop."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- handshake ---------------------------------------------------------------------------

    def _select_subprotocol(self, _connection: ServerConnection, offered: Sequence[str]) -> Any:
        for name in CHARGERS:
            if name in offered:
                return name
        return None

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        offered = [
            item.strip()
            for header in request.headers.get_all("Sec-WebSocket-Protocol")
            for item in header.split(",")
            if item.strip()
        ]
        try:
            if offered and not set(offered) & set(CHARGERS):
                raise HandshakeRefusedError(400, "none of the offered OCPP versions is spoken here")
            if not offered and self.no_subprotocol == "refuse":
                raise HandshakeRefusedError(400, "offer a subprotocol: ocpp2.0.1 or ocpp1.6")
            cn = certificate_cn(connection) if self.profile == 3 else None
            admission = await asyncio.to_thread(
                self.gatekeeper.admit,
                charger_id_of(request.path),
                request.headers.get("Authorization"),
                cn,
            )
        except HandshakeRefusedError as exc:
            metrics.REFUSED.labels(str(exc.status)).inc()
            log.info("refused %s (%s): %s", request.path[:100], connection.remote_address, exc)
            response = connection.respond(exc.status, exc.reason + "\n")
            if exc.status == 401 and self.profile < 3:
                response.headers["WWW-Authenticate"] = 'Basic realm="ampfleet OCPP"'
            return response
        self._admitted[connection] = admission
        return None

    # --- sessions ----------------------------------------------------------------------------

    async def _serve(self, connection: ServerConnection) -> None:
        admission = self._admitted.pop(connection)
        # No subprotocol: the handshake let it through only when ``no_subprotocol`` names one.
        kind = CHARGERS[connection.subprotocol or self.no_subprotocol]
        family, meters = self.families.get(admission.hardware_family)
        session = kind(connection, admission, self.context, family, meters)
        version = session.version
        device_id = admission.device_id
        previous = self.sessions.get(device_id)
        if previous is not None:
            await previous.close("replaced by a new connection of the same charger")
        self.sessions[device_id] = session
        metrics.CONNECTED.set(len(self.sessions))
        self.context.link.hold(device_id)
        session.publish([session.uplink.status("online", fw=admission.firmware_version)])
        self.context.recorder.connected(device_id, version)
        log.info("%s connected (OCPP %s)", device_id, version)
        try:
            await session.run()
        finally:
            if self.sessions.get(device_id) is session:
                del self.sessions[device_id]
                self.context.link.release(device_id)
                if not session.superseded:
                    session.publish([session.uplink.status("offline")])
            metrics.CONNECTED.set(len(self.sessions))
            log.info("%s disconnected", device_id)

    def announce(self) -> None:
        """Publish every held charger online again (on each CONNACK of the bridge's link: a
        will that fired while the bridge was cut off from the broker marked them offline)."""
        for session in self.sessions.values():
            session.publish([session.uplink.status("online", fw=session.uplink.firmware)])

    def deliver(self, device_id: str, channel: str, payload: bytes) -> None:
        """A broker message for a held charger (``BridgeLink`` calls it on the loop)."""
        session = self.sessions.get(device_id)
        if session is not None:
            session.on_downlink(channel, payload)
