"""The shipped families by id: ``family_of`` and its cache.

Every consumer that knows a device's ``hardware_family`` (configuration, commands, ingest,
telemetry, charging, the OCPP bridge) finds its schema here, under one rule for family ids and
one cache per process.
"""

from __future__ import annotations

import functools
import re

import parameters
from parameters.errors import ParameterSchemaError, UnknownFamilyError
from parameters.schema import Family

# Family ids are file names (parameters/build/<id>.json): nothing that could leave the directory.
_FAMILY_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@functools.lru_cache(maxsize=64)
def _load(family_id: str) -> Family:
    return parameters.load_family(family_id)


def family_of(family_id: str) -> Family:
    """The shipped family ``family_id``; UnknownFamilyError when there is none.

    Cached: the compiled files change with a deployment, not while the process runs.
    """
    if not _FAMILY_ID.match(family_id) or ".." in family_id:
        raise UnknownFamilyError(family_id)
    try:
        return _load(family_id)
    except (ParameterSchemaError, OSError, KeyError, ValueError) as exc:
        raise UnknownFamilyError(family_id) from exc


@functools.lru_cache(maxsize=1)
def known_families() -> tuple[str, ...]:
    """Ids of the shipped families, sorted: compiled ones and sources not built yet."""
    ids = {p.stem for p in parameters.BUILD_DIR.glob("*.json")}
    ids |= {p.stem for p in parameters.FAMILIES_DIR.glob("*.yaml")}
    return tuple(sorted(i for i in ids if _FAMILY_ID.match(i)))
