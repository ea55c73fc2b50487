"""What the parameter schema allows a caller to send: pure functions over ``parameters.Family``.

``refusal`` answers why a command may not go (None when it may): the name must be a contract
identifier and not one the cloud reserves for itself; a family that declares commands must
declare this one, one of the caller's roles must be in its ``write`` list, and the ``args``
must be exactly the declared arguments (the required ones present) with values their specs
accept. A family without a schema (None) lets any well-formed command through: there is
nothing to judge it against, and the route's ``devices:command`` permission still applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from cloud.commands import CommandNotPermittedError, CommandRefusedError
from parameters import Family

# docs/device-contract.md 3: a command name is an identifier.
NAME = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
# Commands the cloud sends on its own behalf: ``config.apply`` belongs to remote configuration
# (its id is a configuration change's), so nobody sends it through the commands API.
RESERVED = frozenset({"config.apply"})


def check(family: Family | None, name: str, args: Mapping[str, Any], roles: Iterable[str]) -> None:
    """Raise ``CommandRefusedError`` naming the field at fault; return when the command may go."""
    if not NAME.match(name):
        raise CommandRefusedError("name", "not a command name: ^[a-z][a-z0-9_.]{0,63}$")
    if name in RESERVED:
        raise CommandRefusedError(
            "name", f"{name} is sent by the cloud itself, not through this API"
        )
    if family is None:
        return
    try:
        command = family.parameter(name)
    except KeyError:
        command = None
    if command is None or command.kind != "command":
        declared = ", ".join(sorted(p.id for p in family.parameters if p.kind == "command"))
        raise CommandRefusedError(
            "name", f"family {family.id} has no command {name!r} (it has: {declared or 'none'})"
        )
    held = frozenset(roles)
    if not any(command.writable_by(role) for role in held):
        raise CommandNotPermittedError(
            "name", f"none of your roles ({', '.join(sorted(held)) or 'none'}) may send {name}"
        )
    declared_args = {argument.id: argument for argument in command.args}
    for key in args:
        if key not in declared_args:
            raise CommandRefusedError(f"args.{key}", f"{name} takes no argument {key!r}")
    for argument in command.args:
        if argument.id not in args:
            if argument.required:
                raise CommandRefusedError(f"args.{argument.id}", "missing required argument")
            continue
        reason = argument.value.reason_to_refuse(args[argument.id])
        if reason is not None:
            raise CommandRefusedError(f"args.{argument.id}", reason)
