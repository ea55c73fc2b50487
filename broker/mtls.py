"""The embedded broker's mutual-TLS listener: the TLS context that trusts the platform's PKI,
kept in step with its CRL, and the handshake of each connection.

amqtt 0.12.1 builds one ``SSLContext`` per listener when it starts (``Broker._create_ssl_context``:
``CERT_OPTIONAL``, no CRL) and hands it to ``asyncio.start_server``, which keeps it for good.
A CRL that changes at every revocation needs a context that can be replaced, so the
mutual-TLS listener accepts plain TCP and each connection is upgraded here
(``StreamWriter.start_tls``) with the context in force at that moment. It also gives a refused
handshake (another CA, expired, revoked) its one line in the log; asyncio's own TLS server
drops those silently.

The context (``server_context``): TLS 1.2 or later, ``CERT_REQUIRED``, the PKI's CA chain (the
device CA and the root) as the only trust anchors, the device CA's current CRL with
``VERIFY_CRL_CHECK_LEAF``; OpenSSL checks the chain, the validity and the clientAuth purpose.
``TrustStore`` reads the chain and the CRL from the records (not from the files the PKI
writes for Mosquitto, which another host's API may not have rewritten yet) and rebuilds the
context when the records hold another CRL number.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from pathlib import Path

from amqtt.adapters import StreamWriterAdapter

from cloud.db import Database
from cloud.pki import PkiError, authorities, crl
from cloud.settings import Settings, SettingsError

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds a client has to complete the TLS handshake


def server_context(certfile: str, keyfile: str, chain_pem: str, crl_der: bytes) -> ssl.SSLContext:
    """A server context that requires a client certificate issued under ``chain_pem`` and not
    listed in the CRL ``crl_der``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=chain_pem)
    # Python loads CRLs from files only (``cadata`` takes certificates): a private temporary
    # file, gone once OpenSSL has read it.
    with tempfile.TemporaryDirectory(prefix="ampfleet-crl-") as directory:
        path = Path(directory) / "crl.pem"
        path.write_bytes(crl.pem_of(crl_der))
        context.load_verify_locations(cafile=str(path))
    # The device CA's CRL lists device certificates; the root signs nothing but the device CA
    # (docs/pki.md), so the leaf is the one to check.
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


class TrustStore:
    """The mutual-TLS context, rebuilt from the records whenever the CRL changes."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.crl_number: int | None = None
        self._context: ssl.SSLContext | None = None

    @property
    def context(self) -> ssl.SSLContext:
        """The context new connections are upgraded with."""
        if self._context is None:
            raise RuntimeError("TrustStore.prepare() was not called")
        return self._context

    def prepare(self) -> None:
        """Make the PKI's authorities if missing (as ``ampfleet pki init`` would), then load;
        SettingsError when they cannot be made (no key-encryption key, docs/pki.md)."""
        try:
            with self.database.transaction() as session:
                if authorities.existing(session) is None:
                    crl.current(session, self.settings)
                    log.info("made the platform's CAs for the mutual-TLS listener")
        except PkiError as exc:
            raise SettingsError(
                f"AMPFLEET_BROKER_MTLS_PORT needs the platform's PKI, which cannot be made: {exc}"
            ) from exc
        self.reload()

    def reload(self) -> bool:
        """Rebuild the context if the records hold another CRL than the loaded one; whether
        it was rebuilt. Renewing the CRL is the CRL keeper's work (cloud.pki.crl)."""
        with self.database.session() as session:
            row = crl.stored(session)
            found = authorities.existing(session)
            if row is None or found is None or row.number == self.crl_number:
                return False
            number, crl_der, chain_pem = row.number, row.crl_der, found.chain_pem
        self._context = server_context(
            self.settings.broker_tls_cert_file,
            self.settings.broker_tls_key_file,
            chain_pem,
            crl_der,
        )
        self.crl_number = number
        log.info("mutual TLS: CRL number %d in force", number)
        return True


class CertifiedWriter(StreamWriterAdapter):
    """amqtt's stream writer, carrying the client certificate its handshake verified."""

    def __init__(self, writer: asyncio.StreamWriter, peer_certificate: bytes) -> None:
        super().__init__(writer)
        self.peer_certificate = peer_certificate


async def handshake(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, timeout: float = HANDSHAKE_TIMEOUT
) -> bytes | None:
    """Upgrade a server connection to TLS with ``context``: the client certificate (DER) it
    verified, or None after logging why the handshake failed (the connection is closed)."""
    peer = writer.get_extra_info("peername")
    where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
    try:
        await writer.start_tls(context, ssl_handshake_timeout=timeout)
    except ssl.SSLCertVerificationError as exc:
        log.info("refused TLS from %s: client certificate %s", where, exc.verify_message)
        writer.transport.abort()
        return None
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        log.info("refused TLS from %s: %s", where, reason)
        writer.transport.abort()
        return None
    ssl_object = writer.get_extra_info("ssl_object")
    certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not certificate:  # CERT_REQUIRED makes this unreachable; never admit a client without
        log.info("refused TLS from %s: no client certificate", where)
        writer.transport.abort()
        return None
    return bytes(certificate)
