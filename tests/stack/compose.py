"""docker-compose.yml, translated to run on this machine without Docker.

``ComposeFile`` reads the file the way ``docker compose`` does (YAML with merge keys, then
``${VAR}`` interpolation from an .env mapping, failing on a missing ``${VAR:?}``) and the
Dockerfile's ``ENV``. ``Translator`` turns one service's command, environment and healthcheck
into what runs here, rule by rule, each rule one line below:

* every container is 127.0.0.1: ``<service>:<port>`` becomes ``127.0.0.1:<free port>``, one free
  port per (service, container port); a service's own listeners (``*_PORT`` settings, the
  healthcheck's ``127.0.0.1:<port>``/``-p <port>``) take its own; ``0.0.0.0`` binds become
  127.0.0.1; a published ``localhost:<host port>`` is the service's port;
* volumes are directories of the test, and so is each container's /tmp; the image's working
  directory is the repository;
* the images' programs are Debian's and the virtualenv's (PATH); their paths (Mosquitto's
  plugin) are Debian's; the images' users (mosquitto, uid 1883, and ampfleet) are the test's
  user;
* the ``mysql`` service is the system MariaDB (root, a fresh database); the ``influxdb`` service
  is Debian's InfluxDB 1.6.7, which has no ``/api/v2/write``: ``AMPFLEET_INFLUXDB_API`` v1.

Anything else is taken as written, so a wrong command, variable or dependency in the compose
file fails the stack test.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
WORKDIR = "/opt/ampfleet"  # the Dockerfile's WORKDIR
# Paths inside the images that differ on Debian.
IMAGE_PATHS = {
    "/usr/lib/mosquitto_dynamic_security.so": (
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    ),
}
# Entrypoints of images whose compose `command` holds only arguments.
ENTRYPOINTS = {"prom/prometheus": ["prometheus"]}
# Flags an image's default command sets that a translated command must give explicitly.
IMAGE_FLAGS = {"prom/prometheus": lambda port: [f"--web.listen-address=127.0.0.1:{port(9090)}"]}
IMAGE_USER_ID = "1883"  # the mosquitto user of eclipse-mosquitto
IMAGE_USER = "mosquitto"
OUR_IMAGE_USER = "ampfleet"  # the ampfleet image's user (the Dockerfile's useradd)

_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


class ComposeError(Exception):
    """The compose file cannot be read as docker compose would (a missing secret...)."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """``value`` with compose's ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR:?e}``."""

    def one(match: re.Match[str]) -> str:
        dollar, name, operator, argument, bare = match.groups()
        if dollar:
            return "$"
        if bare:
            return env.get(bare, "")
        current = env.get(name)
        empty = current is None or (current == "" and operator and operator.startswith(":"))
        if operator in ("-", ":-"):
            return argument if empty else str(current)
        if operator in ("?", ":?"):
            if empty:
                raise ComposeError(f"required variable {name} is missing a value: {argument}")
            return str(current)
        return current or ""

    return _VARIABLE.sub(one, value)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_walk(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    return node


def required_variables(text: str) -> list[str]:
    """The variables the file requires (``${VAR:?...}``), in order of first use."""
    seen: dict[str, None] = {}
    for match in re.finditer(r"\$\{(\w+):?\?", text):
        seen.setdefault(match.group(1), None)
    return list(seen)


def dockerfile_env(text: str) -> dict[str, str]:
    """The variables the Dockerfile's ``ENV`` instructions set."""
    env: dict[str, str] = {}
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0] == "ENV":
            for pair in shlex.split(words[1]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


class ComposeFile:
    """The services of docker-compose.yml after interpolation with ``env``."""

    def __init__(self, env: Mapping[str, str], path: Path = ROOT / "docker-compose.yml") -> None:
        document = yaml.safe_load(path.read_text())
        self.services: dict[str, dict[str, Any]] = _walk(document["services"], env)
        self.image_env = dockerfile_env((ROOT / "Dockerfile").read_text())

    def depends_on(self, name: str) -> dict[str, str]:
        """``{dependency: condition}`` of a service (the short list form means started)."""
        raw = self.services[name].get("depends_on") or {}
        if isinstance(raw, list):
            return dict.fromkeys(raw, "service_started")
        return {k: (v or {}).get("condition", "service_started") for k, v in raw.items()}

    def order(self) -> list[str]:
        """Services in an order that starts every dependency first (compose's own)."""
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in done:
                return
            if name in path:
                raise ComposeError(f"dependency cycle: {' -> '.join((*path, name))}")
            for dependency in self.depends_on(name):
                if dependency not in self.services:
                    raise ComposeError(f"{name} depends on unknown service {dependency}")
                visit(dependency, (*path, name))
            done.append(name)

        for name in self.services:
            visit(name, ())
        return done

    def is_ours(self, name: str) -> bool:
        """Whether the service runs the ampfleet image."""
        return self.services[name].get("image") == "ampfleet:latest"

    def is_one_shot(self, name: str) -> bool:
        """A service others wait for to complete (restart "no")."""
        return self.services[name].get("restart") == "no"


class Translator:
    """Rewrites a service's strings for this machine (module docstring: the rules)."""

    def __init__(self, compose: ComposeFile, directory: Path, database_url: str) -> None:
        self.compose = compose
        self.directory = directory
        self.database_url = database_url
        self.ports: dict[tuple[str, int], int] = {}
        user = pwd.getpwuid(os.geteuid())
        self.user, self.uid, self.gid = user.pw_name, user.pw_uid, user.pw_gid

    def port(self, service: str, container_port: int) -> int:
        """The free port standing for ``service:container_port``."""
        key = (service, container_port)
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def volume(self, source: str) -> Path:
        """The directory of a named volume, or the repository path of a bind mount."""
        if source.startswith(("./", "/")):
            return (ROOT / source).resolve()
        path = self.directory / "volumes" / source
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _paths(self, service: str) -> list[tuple[str, str]]:
        private = self.directory / "containers" / service / "tmp"
        private.mkdir(parents=True, exist_ok=True)
        mounts = [(WORKDIR, str(ROOT)), ("/tmp", str(private))]  # noqa: S108 - the container's
        for entry in self.compose.services[service].get("volumes") or []:
            source, target = entry.split(":")[:2]
            mounts.append((target, str(self.volume(source))))
        mounts += list(IMAGE_PATHS.items())
        return sorted(mounts, key=lambda m: -len(m[0]))  # the longest container path first

    def text(self, service: str, value: str) -> str:
        """One string of ``service`` (argument, variable, shell line) translated."""
        paths = dict(self._paths(service))  # one pass: a host path is never rewritten again
        alternatives = "|".join(re.escape(p) for p in paths)
        value = re.sub(
            rf"(?<![\w./-])({alternatives})(?=/|$|[\s\"':])", lambda m: paths[m.group(1)], value
        )
        names = "|".join(re.escape(n) for n in sorted(self.compose.services, key=len)[::-1])
        value = re.sub(
            rf"(?<![\w.-])({names}):(\d+)",
            lambda m: f"127.0.0.1:{self.port(m.group(1), int(m.group(2)))}",
            value,
        )
        for other, spec in self.compose.services.items():
            for published in spec.get("ports") or []:
                host, _, inside = str(published).rpartition(":")
                value = value.replace(
                    f"localhost:{host}", f"127.0.0.1:{self.port(other, int(inside))}"
                )
        value = value.replace(
            f"chown -R {IMAGE_USER_ID}:{IMAGE_USER_ID}", f"chown -R {self.uid}:{self.gid}"
        )
        value = value.replace(
            f"chown {OUR_IMAGE_USER}:{OUR_IMAGE_USER}", f"chown {self.uid}:{self.gid}"
        )
        value = value.replace(f"--user {IMAGE_USER}", f"--user {self.user}")
        # mosquitto-config writes Mosquitto's listeners: they are the mosquitto service's ports
        # (0 is no listener).
        value = re.sub(
            r"--((?:m?tls-)?)port ([1-9]\d*)",
            lambda m: f"--{m.group(1)}port {self.port('mosquitto', int(m.group(2)))}",
            value,
        )
        return value

    def environment(self, service: str) -> dict[str, str]:
        """The process environment of ``service``."""
        spec = self.compose.services[service]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AMPFLEET_", "INFLUXDB_"))}
        env["PATH"] = f"{ROOT / '.venv' / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
        declared = dict(self.compose.image_env) if self.compose.is_ours(service) else {}
        declared.update({k: str(v) for k, v in (spec.get("environment") or {}).items()})
        for key, value in declared.items():
            value = self.text(service, value)
            if key.endswith("_HOST") and value == "0.0.0.0":  # noqa: S104 - what we rewrite
                value = "127.0.0.1"
            if key.endswith("_PORT") and value.isdigit() and key != "AMPFLEET_METRICS_PORT":
                value = str(self.port(service, int(value)))
            env[key] = value
        if "AMPFLEET_METRICS_PORT" in env:
            env["AMPFLEET_METRICS_PORT"] = str(
                self.port(service, int(env["AMPFLEET_METRICS_PORT"]))
            )
        if "AMPFLEET_DATABASE_URL" in env:
            env["AMPFLEET_DATABASE_URL"] = self.database_url
        if env.get("AMPFLEET_INFLUXDB_API") == "v2":
            env["AMPFLEET_INFLUXDB_API"] = "v1"  # Debian's InfluxDB 1.6.7 (module docstring)
        return env

    def command(self, service: str) -> list[str]:
        """The argv of ``service``: entrypoint + command, translated."""
        spec = self.compose.services[service]
        image = str(spec.get("image", "")).split(":")[0]
        entrypoint = spec.get("entrypoint") or ENTRYPOINTS.get(image, [])
        command = spec.get("command") or []
        if isinstance(command, str):
            command = shlex.split(command)
        argv = [self.text(service, str(a)) for a in [*entrypoint, *command]]
        if image in IMAGE_FLAGS:
            argv += IMAGE_FLAGS[image](lambda p: self.port(service, p))
        return argv

    def healthcheck(self, service: str) -> list[str] | None:
        """The argv of the service's healthcheck run from here, or None without one."""
        check = self.compose.services[service].get("healthcheck")
        if not check:
            return None
        test = list(check["test"])

        def local(value: str) -> str:
            value = self.text(service, value)
            value = re.sub(
                r"(127\.0\.0\.1|localhost):(\d+)",
                lambda m: f"127.0.0.1:{self.port(service, int(m.group(2)))}",
                value,
            )
            return re.sub(r"-p (\d+)", lambda m: f"-p {self.port(service, int(m.group(1)))}", value)

        if test[0] == "CMD-SHELL":
            return ["sh", "-c", local(" ".join(test[1:]))]
        if test[0] == "CMD":
            return [local(a) for a in test[1:]]
        return None
