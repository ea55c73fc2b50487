"""Settings: defaults in code, overrides from ``AMPFLEET_*`` environment variables.

The defaults give the embedded mode (SQLite under the data directory, the embedded broker,
SQLite telemetry); production changes only settings. Tests pass a mapping instead of the
environment. Each setting is one ``Setting`` declaration, which is also its documentation:
``ampfleet settings`` prints the table and docs/configuration.md is generated from it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

ENV_PREFIX = "AMPFLEET_"

SettingValue: TypeAlias = str | int | bool | Path


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One declared setting: its name, type, default and meaning."""

    name: str
    default: SettingValue
    description: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] = ()
    minimum: int | None = None

    @property
    def env(self) -> str:
        """The environment variable that overrides this setting."""
        return ENV_PREFIX + self.name.upper()

    def coerce(self, value: Any) -> Any:
        """Turn a raw value (string from the environment, or a Python value) into the setting."""
        try:
            if isinstance(value, str) and self.parse is not str:
                value = self.parse(value)
            elif self.parse is Path and not isinstance(value, Path):
                value = Path(value)
            elif self.parse is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError("expected an integer")
            elif self.parse is _parse_bool and not isinstance(value, bool):
                raise ValueError("expected a boolean")
        except ValueError as exc:
            raise SettingsError(f"{self.env}: {exc}") from exc
        if self.choices and value not in self.choices:
            allowed = ", ".join(self.choices)
            raise SettingsError(f"{self.env}: must be one of {allowed}, not {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise SettingsError(f"{self.env}: must be at least {self.minimum}, not {value!r}")
        return value


PASSWORD_KDF_PROFILES = ("rfc9106-low-memory", "rfc9106-high-memory", "insecure-fast-for-tests")

DECLARED: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        Path(".ampfleet"),
        "Directory for the embedded mode's files: SQLite "
        "databases, the JWT signing key, the initial admin password.",
        Path,
    ),
    Setting(
        "database_url",
        "",
        "SQLAlchemy URL of the records database, e.g. "
        "`mysql+pymysql://user:pw@db/ampfleet?charset=utf8mb4`. Empty: SQLite file "
        "`<data_dir>/ampfleet.db`.",
    ),
    Setting("api_host", "127.0.0.1", "Address the API listens on (`0.0.0.0` in containers)."),
    Setting("api_port", 8080, "TCP port of the API.", int, minimum=1),
    Setting("api_workers", 2, "gunicorn worker processes serving the API.", int, minimum=1),
    Setting("api_threads", 4, "Threads per gunicorn worker.", int, minimum=1),
    Setting(
        "tls_cert_file",
        "",
        "PEM certificate chain: when set with `tls_key_file`, the API listener serves HTTPS.",
    ),
    Setting("tls_key_file", "", "PEM private key for `tls_cert_file`."),
    Setting(
        "public_url",
        "",
        "URL clients use to reach the API, used in links and as the "
        "token issuer. Empty: derived from `api_host` and `api_port`.",
    ),
    Setting(
        "trusted_proxies",
        0,
        "Number of reverse proxies in front of the API whose "
        "X-Forwarded-* headers are trusted (for the audit log's source address).",
        int,
        minimum=0,
    ),
    Setting(
        "max_request_bytes",
        1_048_576,
        "Largest request body accepted; larger bodies get 413.",
        int,
        minimum=1024,
    ),
    Setting(
        "jwt_private_key_file",
        "",
        "PEM RSA key that signs access tokens. Created on "
        "first start when missing. Empty: `<data_dir>/jwt-signing-key.pem`. Every API "
        "instance behind one load balancer must share it.",
    ),
    Setting("access_token_ttl", 900, "Lifetime of an access token, seconds.", int, minimum=30),
    Setting(
        "refresh_token_ttl",
        2_592_000,
        "Lifetime of a refresh token, seconds (rotated on every use).",
        int,
        minimum=60,
    ),
    Setting(
        "login_max_failures",
        5,
        "Failed password logins of one account from one client address before further logins "
        "of it from there wait (429 with Retry-After).",
        int,
        minimum=1,
    ),
    Setting(
        "login_max_failures_per_address",
        20,
        "Failed password logins from one client address, whatever the account, before its "
        "logins wait.",
        int,
        minimum=1,
    ),
    Setting(
        "login_max_failures_per_account",
        50,
        "Failed password logins of one account from all addresses before the addresses that "
        "failed on it wait (an address that did not fail, its owner's, is let through).",
        int,
        minimum=1,
    ),
    Setting(
        "login_block_seconds",
        30,
        "First wait after a login limit is reached, seconds; doubles with each further failure.",
        int,
        minimum=1,
    ),
    Setting(
        "login_max_block_seconds",
        900,
        "Longest wait of a throttled login, seconds: a guesser is slowed, the owner never "
        "locked out for longer.",
        int,
        minimum=1,
    ),
    Setting(
        "login_failure_window",
        3600,
        "Seconds after its last failure that a login counter is forgotten (and deleted); at "
        "least `login_max_block_seconds`.",
        int,
        minimum=60,
    ),
    Setting(
        "oidc_issuer",
        "",
        "Issuer (`iss`) of an external OpenID Connect provider "
        "(Keycloak, Cognito) whose tokens are accepted too. Empty: none.",
    ),
    Setting("oidc_jwks_url", "", "JWKS URL of that provider."),
    Setting("oidc_audience", "", "Audience (`aud`) its tokens must carry."),
    Setting(
        "oidc_email_claim",
        "email",
        "Claim of an external token naming the local user (matched against the user's e-mail).",
    ),
    Setting(
        "password_kdf",
        "rfc9106-low-memory",
        "argon2id cost profile for passwords and "
        "client secrets (RFC 9106). The test profile is refused outside tests.",
        choices=PASSWORD_KDF_PROFILES,
    ),
    Setting(
        "admin_email",
        "admin@ampfleet.local",
        "Login of the platform administrator created on first start.",
    ),
    Setting(
        "admin_password",
        "",
        "Password of that administrator on first start. Empty: a "
        "random one, printed once and saved in `<data_dir>/initial-admin-password`.",
    ),
    Setting(
        "broker",
        "embedded",
        "MQTT broker: `embedded` (amqtt in process) or `external` "
        "(Mosquitto/EMQX at `broker_url`).",
        choices=("embedded", "external"),
    ),
    Setting(
        "broker_url",
        "mqtt://127.0.0.1:1884",
        "URL of the MQTT broker the cloud's services connect to (`mqtt://` or `mqtts://`). "
        "The embedded broker listens on its port: 1884 by default, so that it does not collide "
        "with a system Mosquitto on 1883.",
    ),
    Setting(
        "broker_tls_port",
        0,
        "Port of the embedded broker's TLS listener (0: none). "
        "Needs `broker_tls_cert_file` and `broker_tls_key_file`.",
        int,
        minimum=0,
    ),
    Setting("broker_tls_cert_file", "", "PEM certificate chain of the broker's TLS listener."),
    Setting("broker_tls_key_file", "", "PEM private key of the broker's TLS listener."),
    Setting(
        "broker_mtls_port",
        0,
        "Port of the embedded broker's mutual-TLS listener (0: none): devices present a "
        "certificate of the platform's PKI (docs/pki.md), checked against its CA chain and "
        "current CRL; the certificate's CN is the device id and must be the client id; "
        "username and password are ignored there. Its server certificate is "
        "`broker_tls_cert_file`/`broker_tls_key_file` (docs/mutual-tls-embedded.md).",
        int,
        minimum=0,
    ),
    Setting(
        "broker_tls_ca_file",
        "",
        "CA bundle the cloud's MQTT clients trust for `mqtts://` (empty: the system's).",
    ),
    Setting(
        "broker_service_user",
        "ampfleet-service",
        "Broker account of the cloud's services (ingest, status, commands).",
    ),
    Setting(
        "broker_service_password",
        "",
        "Its password. Empty: generated once into `<data_dir>/broker-service-password`.",
    ),
    Setting(
        "broker_bridge_user",
        "ampfleet-ocpp-bridge",
        "Broker account of the OCPP bridge: it publishes the device-to-cloud channels of the "
        "OCPP chargers it holds and follows their cloud-to-device channels "
        "(broker/README.md).",
    ),
    Setting(
        "broker_bridge_password",
        "",
        "Its password. Empty: generated once into `<data_dir>/broker-bridge-password`.",
    ),
    Setting(
        "broker_device_passwords",
        "",
        "Whether devices may log in to the broker with an MQTT password (`true`/`false`) "
        "besides a client certificate of the platform PKI (docs/mutual-tls.md): for boards "
        "without certificates. Off, the API issues no device password and the broker's device "
        "accounts hold none. Empty: `true` with the embedded broker (`ampfleet up`), `false` "
        "with an external one (production).",
    ),
    Setting(
        "broker_admin_user",
        "ampfleet-admin",
        "Mosquitto dynamic-security admin account the provisioner uses (external broker).",
    ),
    Setting(
        "broker_admin_password",
        "",
        "Its password. Empty: generated once into `<data_dir>/broker-admin-password`.",
    ),
    Setting(
        "max_payload_bytes",
        16384,
        "Largest device message accepted; larger ones are rejected and counted.",
        int,
        minimum=256,
    ),
    Setting(
        "max_clock_skew",
        300,
        "Seconds a device timestamp may lie in the future before the message is rejected.",
        int,
        minimum=0,
    ),
    Setting(
        "telemetry_store",
        "sqlite",
        "Telemetry store: `sqlite` (embedded, `<data_dir>/telemetry.db`) or `influxdb`.",
        choices=("sqlite", "influxdb"),
    ),
    Setting(
        "influxdb_url", "http://127.0.0.1:8086", "InfluxDB URL when `telemetry_store=influxdb`."
    ),
    Setting(
        "influxdb_timeout",
        10,
        "Seconds before an InfluxDB request counts as failed (the batch is then spooled).",
        int,
        minimum=1,
    ),
    Setting(
        "influxdb_api",
        "v2",
        "Write API of that InfluxDB: `v2` (`/api/v2/write` through "
        "influxdb-client: InfluxDB 1.8+, 2.x, 3.x) or `v1` (`/write`: InfluxDB 1.6/1.7). "
        "Queries are InfluxQL on `/query` either way.",
        choices=("v1", "v2"),
    ),
    Setting("influxdb_bucket", "ampfleet", "Bucket (v2) or database (v1) holding telemetry."),
    Setting("influxdb_org", "ampfleet", "InfluxDB organization (v2 writes)."),
    Setting("influxdb_token", "", "InfluxDB API token (empty: no authentication)."),
    Setting("ingest_batch_size", 5000, "Samples per telemetry store write.", int, minimum=1),
    Setting(
        "ingest_flush_interval",
        1000,
        "Longest wait, in milliseconds, before a partial batch is written.",
        int,
        minimum=10,
    ),
    Setting(
        "ingest_queue_size",
        100_000,
        "Bound of the ingest worker's in-memory queue; when "
        "full, the worker stops reading from the broker until it drains.",
        int,
        minimum=100,
    ),
    Setting(
        "metrics_port",
        9100,
        "Port of a worker's Prometheus `/metrics` endpoint "
        "(0: none). The API serves `/metrics` on its own port.",
        int,
        minimum=0,
    ),
    Setting(
        "metrics_host",
        "",
        "Address a worker's `/metrics` endpoint listens on. Empty: `api_host` (`127.0.0.1` "
        "unless set; `0.0.0.0` in containers).",
    ),
    Setting(
        "metrics_token",
        "",
        "Bearer token a scrape of a worker's `/metrics` must send "
        "(`Authorization: Bearer <token>`; empty: no authentication).",
    ),
    Setting(
        "ocpp_host",
        "127.0.0.1",
        "Address the OCPP bridge listens on (`0.0.0.0` in containers).",
    ),
    Setting(
        "ocpp_port",
        9000,
        "Port of the OCPP bridge's WebSocket listener; chargers connect to "
        "`ws[s]://host:port/<anything>/<charger id>` (0: any free port).",
        int,
        minimum=0,
    ),
    Setting(
        "ocpp_security_profile",
        1,
        "OCPP security profile of the listener: 1 Basic auth over plain WebSocket, 2 TLS and "
        "Basic auth, 3 TLS with client certificates whose CN is the charger id. One profile per "
        "listener: run one bridge per profile.",
        int,
        minimum=1,
    ),
    Setting("ocpp_tls_cert_file", "", "PEM certificate chain of the TLS listener (profiles 2, 3)."),
    Setting("ocpp_tls_key_file", "", "PEM private key of the TLS listener."),
    Setting(
        "ocpp_tls_client_ca_file",
        "",
        "CA bundle that charger certificates must chain to (profile 3).",
    ),
    Setting(
        "ocpp_no_subprotocol",
        "ocpp1.6",
        "What a charger that offers no WebSocket subprotocol speaks: `ocpp1.6` (many 1.6 "
        "chargers send none) or `refuse` (400 at the handshake).",
        choices=("ocpp1.6", "refuse"),
    ),
    Setting(
        "ocpp_ping_interval",
        30,
        "Seconds between WebSocket pings to each charger (0: none); a charger that does not "
        "answer within as long again is disconnected.",
        int,
        minimum=0,
    ),
    Setting(
        "ocpp_call_timeout",
        30,
        "Seconds a charger has to answer a call of the bridge (a command) before it fails.",
        int,
        minimum=1,
    ),
    Setting(
        "ocpp_heartbeat_interval",
        300,
        "Heartbeat interval, seconds, given to chargers in the BootNotification answer.",
        int,
        minimum=10,
    ),
    Setting(
        "ocpp_data_transfer",
        "org.ampfleet/*",
        "DataTransfer the bridge accepts from chargers, as comma-separated "
        "`vendorId/messageId` (`vendorId/*`: any message); each becomes an event. Others are "
        "answered UnknownVendorId or UnknownMessageId.",
    ),
    Setting(
        "ocpp_sign_csr",
        True,
        "The bridge signs a charger's SignCertificate request with the platform PKI's device CA "
        "(the CN must be the charger id, docs/pki.md) and sends CertificateSigned itself; "
        "`false`: the request only becomes an event.",
        _parse_bool,
    ),
    Setting(
        "ocpp_uvloop",
        True,
        "Run the OCPP bridge's event loop on uvloop (cheaper per message, docs/ocpp.md); "
        "`false`: the standard asyncio loop.",
        _parse_bool,
    ),
    Setting(
        "pki_kek",
        "",
        "Key-encryption key of the PKI: a secret of at least 32 characters (`ampfleet pki "
        "new-kek` prints one); the CAs' private keys are sealed in the records with AES-256-GCM "
        "under a key derived from it (HKDF-SHA256). Production needs it or `pki_kek_file`; "
        "never keep it in the data directory.",
    ),
    Setting(
        "pki_kek_file",
        "",
        "File holding that key (a mounted secret). Both empty: with a SQLite database (the "
        "embedded mode) `$XDG_CONFIG_HOME/ampfleet/pki-kek` (`~/.config`), created 0600 with "
        "the first key; with any other database the PKI refuses to work.",
    ),
    Setting(
        "pki_ca_name",
        "ampfleet",
        "Name in the subjects of the platform's CAs (`<name> Root CA`, `<name> Device CA`), "
        "used when they are created.",
    ),
    Setting(
        "pki_certificate_days",
        365,
        "Validity of a device certificate, days (cut to the issuing CA's own).",
        int,
        minimum=1,
    ),
    Setting(
        "pki_renew_before_days",
        30,
        "Days before its certificate expires from which a device may renew it over the device "
        "contract (`cert/request`, docs/device-contract.md 4.10); a new key asked for earlier "
        "is refused. Devices use the same window.",
        int,
        minimum=1,
    ),
    Setting(
        "pki_crl_days",
        7,
        "Validity of a CRL (its nextUpdate), days. A new one is issued on every revocation and "
        "once half of it has passed.",
        int,
        minimum=1,
    ),
    Setting(
        "pki_crl_file",
        "",
        "Where the current CRL is written (PEM; Mosquitto's `crlfile`). Empty: "
        "`<data_dir>/pki/crl.pem`.",
    ),
    Setting(
        "pki_ca_file",
        "",
        "Where the CA chain (device CA, then root) is written (Mosquitto's `cafile`). Empty: "
        "`<data_dir>/pki/ca-chain.pem`.",
    ),
    Setting(
        "pki_crl_check_interval",
        60,
        "Seconds between the charging worker's CRL checks: it rewrites the CRL file when "
        "another process changed the CRL, and issues a new CRL when half of it has passed.",
        int,
        minimum=1,
    ),
    Setting(
        "mail_backend",
        "",
        "Where outgoing mail (invitations) goes: `smtp` (the server at `smtp_host`) or "
        "`console` (written to the log, for the embedded mode). Empty: `smtp` when "
        "`smtp_host` is set, else `console`.",
        choices=("smtp", "console"),
    ),
    Setting(
        "mail_from",
        "ampfleet <no-reply@ampfleet.local>",
        "From address of outgoing mail: `user@host` or `Name <user@host>`.",
    ),
    Setting("smtp_host", "", "SMTP server (relay or submission) outgoing mail goes through."),
    Setting(
        "smtp_port",
        0,
        "Its port. 0: 587 for `starttls`, 465 for `ssl`, 25 for `none`.",
        int,
        minimum=0,
    ),
    Setting(
        "smtp_security",
        "starttls",
        "TLS to the SMTP server: `starttls` (upgrade, refused if the server cannot), `ssl` "
        "(implicit TLS) or `none`.",
        choices=("starttls", "ssl", "none"),
    ),
    Setting("smtp_username", "", "SMTP AUTH user name (empty: no authentication)."),
    Setting("smtp_password", "", "SMTP AUTH password."),
    Setting(
        "smtp_timeout",
        10,
        "Seconds before an SMTP connection or reply counts as failed.",
        int,
        minimum=1,
    ),
    Setting(
        "smtp_tls_ca_file",
        "",
        "CA bundle that the SMTP server's certificate must chain to (empty: the system's).",
    ),
    Setting(
        "invitation_ttl",
        604_800,
        "Seconds an e-mailed invitation to a charger (owner or guest) can be accepted, unless "
        "the inviter sets its `expires_at`.",
        int,
        minimum=300,
    ),
    Setting(
        "pairing_lockout",
        900,
        "Seconds a charger, or a user, may not try to pair after five wrong box codes (within "
        "as many seconds); the lock ends this long after the fifth (docs/pairing.md).",
        int,
        minimum=60,
    ),
    Setting(
        "guest_credential_max_days",
        7,
        "Longest window, in days from its issue, of a guest credential (the signed pass a guest "
        "charges with while the charger is offline, docs/guest-credentials.md); it never "
        "outlasts the guest's own window. A credential cannot be withdrawn from a charger that "
        "stays offline, so keep it short.",
        int,
        minimum=1,
    ),
    Setting(
        "charging_start_timeout",
        300,
        "Seconds a charger has to start a session asked for from the app: the `charging.start` "
        "command's expiry, and how long the request waits for `charging.started` before it "
        "is marked failed.",
        int,
        minimum=10,
    ),
    Setting(
        "charging_refresh_interval",
        60,
        "Seconds between the charging worker's rounds: failed app starts, and the local "
        "authorization lists of chargers whose guest windows opened or closed.",
        int,
        minimum=1,
    ),
    Setting(
        "charging_live_max_seconds",
        3600,
        "Longest a live session view (server-sent events) stays open; clients reconnect. "
        "Each open view holds one API thread (`api_threads`).",
        int,
        minimum=10,
    ),
    Setting(
        "device_approval",
        "",
        "What makes a device approved to be in service (an unapproved device that connects is "
        "quarantined, docs/manufacturing.md): `registration` (an admin's `POST /devices` "
        "approves it) or `whitelist` (only enrollment from an approved production batch, or "
        "`POST /devices/{id}/approve`). Empty: `registration` with the embedded broker "
        "(`ampfleet up`), `whitelist` with an external one (production).",
        choices=("registration", "whitelist"),
    ),
    Setting(
        "factory_firmware",
        "",
        "The stable firmware version enrollment records as the one to flash, per hardware "
        "family: `ac22-3p=1.5.0,wallbox-7kw=1.4.2` (`*=1.5.0` for every family). Empty, or a "
        "family not named: the bundle version of this source tree (`firmware.__version__`).",
    ),
    Setting(
        "simulated_chargers",
        3,
        "Simulated chargers `ampfleet up` runs (real firmware core, simulated hardware and "
        "EVs), so a newcomer sees data at once (0: none).",
        int,
        minimum=0,
    ),
    Setting(
        "log_level",
        "INFO",
        "Log level of every process.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    Setting(
        "testing",
        False,
        "Test mode: allows the fast KDF profile. Never set in production.",
        _parse_bool,
    ),
)

_BY_NAME = {s.name: s for s in DECLARED}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings of one process: one typed field per ``DECLARED`` setting.

    The fields carry no defaults and no documentation: both live in ``DECLARED``, and
    tests/test_settings.py checks that the two list the same names, in the same order, with
    defaults of the annotated types. A misspelt setting name is therefore a mypy error.
    """

    data_dir: Path
    database_url: str
    api_host: str
    api_port: int
    api_workers: int
    api_threads: int
    tls_cert_file: str
    tls_key_file: str
    public_url: str
    trusted_proxies: int
    max_request_bytes: int
    jwt_private_key_file: str
    access_token_ttl: int
    refresh_token_ttl: int
    login_max_failures: int
    login_max_failures_per_address: int
    login_max_failures_per_account: int
    login_block_seconds: int
    login_max_block_seconds: int
    login_failure_window: int
    oidc_issuer: str
    oidc_jwks_url: str
    oidc_audience: str
    oidc_email_claim: str
    password_kdf: str
    admin_email: str
    admin_password: str
    broker: str
    broker_url: str
    broker_tls_port: int
    broker_tls_cert_file: str
    broker_tls_key_file: str
    broker_mtls_port: int
    broker_tls_ca_file: str
    broker_service_user: str
    broker_service_password: str
    broker_bridge_user: str
    broker_bridge_password: str
    broker_device_passwords: str
    broker_admin_user: str
    broker_admin_password: str
    max_payload_bytes: int
    max_clock_skew: int
    telemetry_store: str
    influxdb_url: str
    influxdb_timeout: int
    influxdb_api: str
    influxdb_bucket: str
    influxdb_org: str
    influxdb_token: str
    ingest_batch_size: int
    ingest_flush_interval: int
    ingest_queue_size: int
    metrics_port: int
    metrics_host: str
    metrics_token: str
    ocpp_host: str
    ocpp_port: int
    ocpp_security_profile: int
    ocpp_tls_cert_file: str
    ocpp_tls_key_file: str
    ocpp_tls_client_ca_file: str
    ocpp_no_subprotocol: str
    ocpp_ping_interval: int
    ocpp_call_timeout: int
    ocpp_heartbeat_interval: int
    ocpp_data_transfer: str
    ocpp_sign_csr: bool
    ocpp_uvloop: bool
    pki_kek: str
    pki_kek_file: str
    pki_ca_name: str
    pki_certificate_days: int
    pki_renew_before_days: int
    pki_crl_days: int
    pki_crl_file: str
    pki_ca_file: str
    pki_crl_check_interval: int
    mail_backend: str
    mail_from: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_username: str
    smtp_password: str
    smtp_timeout: int
    smtp_tls_ca_file: str
    invitation_ttl: int
    pairing_lockout: int
    guest_credential_max_days: int
    charging_start_timeout: int
    charging_refresh_interval: int
    charging_live_max_seconds: int
    device_approval: str
    factory_firmware: str
    simulated_chargers: int
    log_level: str
    testing: bool

    @property
    def values(self) -> Mapping[str, SettingValue]:
        """Every setting by name, in declaration order (``ampfleet settings`` prints them)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @property
    def device_passwords(self) -> bool:
        """Whether devices may log in to the broker with a password (else by certificate)."""
        return self.broker_device_passwords == "true"

    @property
    def data_path(self) -> Path:
        """The data directory (embedded-mode files)."""
        return self.data_dir

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Resolve defaults, then the environment, then explicit overrides (tests)."""
        environ = os.environ if environ is None else environ
        # Any only here: each value has been through its declaration's coerce, which gives it
        # the type of the field it fills (the agreement test checks the declarations).
        values: dict[str, Any] = {}
        for setting in DECLARED:
            raw = environ.get(setting.env)
            values[setting.name] = setting.default if raw is None else setting.coerce(raw)
        for name, value in (overrides or {}).items():
            if name not in _BY_NAME:
                raise SettingsError(f"unknown setting {name!r}")
            values[name] = _BY_NAME[name].coerce(value)
        return _derive(cls(**values))


def _derive(s: Settings) -> Settings:
    """Fill the settings whose empty default means 'derived from others', and check them."""
    database_url = s.database_url or f"sqlite:///{(s.data_dir / 'ampfleet.db').resolve()}"
    jwt_private_key_file = s.jwt_private_key_file or str(s.data_dir / "jwt-signing-key.pem")
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise SettingsError("AMPFLEET_TLS_CERT_FILE and AMPFLEET_TLS_KEY_FILE go together")
    public_url = s.public_url
    if not public_url:
        scheme = "https" if s.tls_cert_file else "http"
        wildcard = {"0.0.0.0", "::"}  # noqa: S104 - recognising it, not binding to it
        host = "127.0.0.1" if s.api_host in wildcard else s.api_host
        public_url = f"{scheme}://{host}:{s.api_port}"
    public_url = public_url.rstrip("/")
    if s.login_failure_window < s.login_max_block_seconds:
        raise SettingsError(
            "AMPFLEET_LOGIN_FAILURE_WINDOW: must be at least AMPFLEET_LOGIN_MAX_BLOCK_SECONDS"
        )
    if bool(s.oidc_issuer) != bool(s.oidc_jwks_url):
        raise SettingsError("AMPFLEET_OIDC_ISSUER and AMPFLEET_OIDC_JWKS_URL go together")
    if s.ocpp_security_profile > 3:
        raise SettingsError("AMPFLEET_OCPP_SECURITY_PROFILE: must be 1, 2 or 3")
    if s.ocpp_security_profile > 1 and not (s.ocpp_tls_cert_file and s.ocpp_tls_key_file):
        raise SettingsError(
            "AMPFLEET_OCPP_SECURITY_PROFILE 2 and 3 need AMPFLEET_OCPP_TLS_CERT_FILE and "
            "AMPFLEET_OCPP_TLS_KEY_FILE"
        )
    if s.ocpp_security_profile == 3 and not s.ocpp_tls_client_ca_file:
        raise SettingsError(
            "AMPFLEET_OCPP_SECURITY_PROFILE 3 needs AMPFLEET_OCPP_TLS_CLIENT_CA_FILE"
        )
    if s.pki_kek and len(s.pki_kek.strip()) < 32:
        raise SettingsError(
            "AMPFLEET_PKI_KEK: must be at least 32 characters (`ampfleet pki new-kek` makes one)"
        )
    metrics_host = s.metrics_host or s.api_host
    # Security by default: production (an external broker) admits only whitelisted devices.
    device_approval = s.device_approval or (
        "registration" if s.broker == "embedded" else "whitelist"
    )
    if s.broker_device_passwords != "":
        try:
            device_passwords = _parse_bool(str(s.broker_device_passwords))
        except ValueError as exc:
            raise SettingsError(f"AMPFLEET_BROKER_DEVICE_PASSWORDS: {exc}") from exc
    else:  # off by default in production (an external broker): certificates only
        device_passwords = s.broker == "embedded"
    pki_crl_file = s.pki_crl_file or str(s.data_dir / "pki" / "crl.pem")
    pki_ca_file = s.pki_ca_file or str(s.data_dir / "pki" / "ca-chain.pem")
    mail_backend = s.mail_backend or ("smtp" if s.smtp_host else "console")
    if mail_backend == "smtp" and not s.smtp_host:
        raise SettingsError("AMPFLEET_MAIL_BACKEND smtp needs AMPFLEET_SMTP_HOST")
    smtp_port = s.smtp_port or {"starttls": 587, "ssl": 465, "none": 25}[s.smtp_security]
    if s.password_kdf == PASSWORD_KDF_PROFILES[-1] and not s.testing:
        raise SettingsError("AMPFLEET_PASSWORD_KDF: the test profile needs AMPFLEET_TESTING=true")
    return dataclasses.replace(
        s,
        database_url=database_url,
        jwt_private_key_file=jwt_private_key_file,
        public_url=public_url,
        metrics_host=metrics_host,
        device_approval=device_approval,
        broker_device_passwords="true" if device_passwords else "false",
        mail_backend=mail_backend,
        smtp_port=smtp_port,
        pki_crl_file=pki_crl_file,
        pki_ca_file=pki_ca_file,
    )


def markdown_table() -> str:
    """Every setting as a Markdown table: the reference in docs/configuration.md."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in DECLARED:
        default = str(s.default).lower() if isinstance(s.default, bool) else str(s.default)
        cell = f"`{default}`" if default else "(empty)"
        choices = f" One of: {', '.join(f'`{c}`' for c in s.choices)}." if s.choices else ""
        rows.append(f"| `{s.env}` | {cell} | {s.description}{choices} |")
    return "\n".join(rows) + "\n"
