"""Who may charge where, and each charger's local authorization list (contract 4.9).

``may_charge`` is the one decision: an active user may start and stop sessions on a charger when
``charging:start`` holds there for them, through a role assignment (org-wide, the charger's site
or one of its groups: the same scope the API applies, ``cloud.api.scoping.scope_device_clause``)
or through a ``ChargerAccess`` row (an owner always, a guest inside the window), exactly as the
principal of that user's own requests would hold it (``cloud.identity.principal``).

The local list of a charger is the upper-case uid of every enabled card of the charger's
organization whose (active) user may charge there now *or later*: a guest whose window has not
started yet is listed, so that the card works offline when the window opens, with ``until`` =
the window's end. The charger cannot know a start, so early use while offline is possible; when
online, the cloud confirms every card start with ``may_charge`` and stops a refused one
(contract 14, ``card_refused``). Cards of another organization are never listed: a uid names a
card within one organization only.

``refresh_authorization_lists`` recomputes lists, records a new version where the content
changed (sha256 digest of the canonical list), commits, and only then publishes them retained
on ``af/{id}/auth/list`` (QoS 1), ``BATCH`` lists at a time with every PUBACK awaited: a list
is never on the broker under a version the database does not hold. A broker that cannot be
reached leaves ``published_at`` empty, and the next refresh of that charger (``sweep``) sends
it. Only the charging worker publishes, over its one connection: the API records requests
(``cloud.access.outbox``) in the transaction of the change.

A list over ``contract.MAX_AUTH_TOKENS`` is not cut (which cards would lose their right is
nobody's choice to make here): it is refused, logged as an error and counted
(``ampfleet_auth_lists_refused_total``), and the charger keeps the list it has, while the
cloud's confirmation keeps refusing whoever lost the right.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

from prometheus_client import Counter
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from cloud.access.models import AuthorizationList, RfidCard
from cloud.db import utcnow
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.identity.models import Role, User
from cloud.identity.principal import Principal, Scope, access_of, grants_of, in_window
from cloud.identity.scoping import scope_device_clause
from firmware.core import contract

log = logging.getLogger(__name__)

CHARGE = "charging:start"
CHUNK = 500  # ids per IN (...): far below SQLite's variable limit
ROUNDS = 3  # publish attempts when a concurrent refresh overtook ours (see _publish)
BATCH = 100  # lists per publish: sent together, then every PUBACK awaited

REFUSED = Counter(
    "ampfleet_auth_lists_refused_total",
    "Authorization lists not published: too_large (over MAX_AUTH_TOKENS) or invalid.",
    ["reason"],
)

Tokens = dict[str, int | None]
T = TypeVar("T")


class AuthListPublisher(Protocol):
    """Puts chargers' authorization lists on the broker, retained."""

    def send_all(self, lists: Sequence[tuple[str, bytes]]) -> set[str]:
        """Publish (device id, payload) pairs; the ids whose list the broker acknowledged
        (none, logged, when it cannot be reached)."""
        ...


def message(device_id: str, payload: bytes) -> tuple[str, bytes, bool]:
    """(topic, payload, retain) of a list: retained, the complete list (contract 4.9)."""
    return contract.topic(device_id, contract.AUTH_LIST), payload, True


# --- who may charge ---------------------------------------------------------------------------


def _role_scope(user: User) -> Scope:
    """Where ``charging:start`` holds for ``user`` through role assignments alone."""
    grants = grants_of(user.assignments)
    return Principal("user", user.id, user.email, user.organization_id, grants).scope(CHARGE)


def may_charge(session: Session, user_id: int, device: Device, at: dt.datetime) -> bool:
    """True when the user may start and stop sessions on ``device`` at ``at``."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        return False
    principal = Principal(
        "user",
        user.id,
        user.email,
        user.organization_id,
        grants_of(user.assignments),
        access_of(session, user.id, at),
    )
    covered = select(Device.id).where(
        Device.id == device.id, scope_device_clause(principal.scope(CHARGE))
    )
    return session.scalar(covered) is not None


def _level_permissions(session: Session) -> dict[AccessLevel, frozenset[str]]:
    """What an owner and a guest hold on their charger: the stored system roles of those names
    (as ``access_of`` reads them; a platform admin may edit them)."""
    roles = session.scalars(
        select(Role).where(
            Role.organization_id.is_(None), Role.name.in_([level.value for level in AccessLevel])
        )
    )
    return {AccessLevel(role.name): frozenset(role.permission_names) for role in roles}


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _access_until(row: ChargerAccess, at: dt.datetime) -> tuple[bool, int | None]:
    """(listed, until ms) of an access row: whether it holds at ``at`` or at some later moment
    (a guest's window still to come), and the end of that right."""
    if row.level is AccessLevel.OWNER:
        return True, None
    first = max(at, row.valid_from) if row.valid_from is not None else at
    if not in_window(row, first):
        return False, None
    return True, None if row.valid_until is None else _ms(row.valid_until)


def _merge(tokens: Tokens, uid: str, until: int | None) -> None:
    """Keep the longest right: no end beats any end, a later end beats an earlier one."""
    if uid in tokens:
        held = tokens[uid]
        if held is None or (until is not None and until <= held):
            return
    tokens[uid] = until


def chunks(ids: list[T]) -> Iterator[list[T]]:
    """``ids`` in slices small enough for one IN (...)."""
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _organization_lists(
    session: Session, organization_id: int, device_ids: set[str], at: dt.datetime
) -> dict[str, Tokens]:
    """The lists of ``device_ids`` (all of ``organization_id``) at ``at``.

    Batched for a whole organization: one query for the cards, one per distinct role scope of
    their holders (most holders share a handful), one for the access rows; then the work per
    charger is proportional to its list, not to the organization's cards.
    """
    lists: dict[str, Tokens] = {device_id: {} for device_id in device_ids}
    holders: dict[int, list[str]] = defaultdict(list)
    cards = (
        select(RfidCard.uid, RfidCard.user_id)
        .join(User, User.id == RfidCard.user_id)
        .where(
            RfidCard.organization_id == organization_id,
            RfidCard.enabled.is_(True),
            User.is_active.is_(True),
        )
    )
    for uid, user_id in session.execute(cards):
        holders[user_id].append(uid)
    if not holders:
        return lists
    by_scope: dict[Scope, list[int]] = defaultdict(list)
    for chunk in chunks(sorted(holders)):
        for user in session.scalars(select(User).where(User.id.in_(chunk))):
            scope = _role_scope(user)
            if scope != Scope(orgs=frozenset()):
                by_scope[scope].append(user.id)
    for scope, user_ids in by_scope.items():
        covered = select(Device.id).where(
            Device.organization_id == organization_id, scope_device_clause(scope)
        )
        for device_id in session.scalars(covered):
            if device_id in lists:
                for user_id in user_ids:
                    for uid in holders[user_id]:
                        _merge(lists[device_id], uid, None)
    rights = _level_permissions(session)
    rows = (
        select(ChargerAccess)
        .join(Device, Device.id == ChargerAccess.device_id)
        .where(Device.organization_id == organization_id)
    )
    for row in session.scalars(rows):
        if row.device_id not in lists or row.user_id not in holders:
            continue
        if CHARGE not in rights.get(row.level, frozenset()):
            continue
        listed, until = _access_until(row, at)
        if listed:
            for uid in holders[row.user_id]:
                _merge(lists[row.device_id], uid, until)
    return lists


def authorization_tokens(session: Session, device: Device, at: dt.datetime) -> Tokens:
    """The charger's local list at ``at``: card uid -> valid until (ms), None for no end."""
    return _organization_lists(session, device.organization_id, {device.id}, at)[device.id]


# --- versions and publishing ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Pending:
    device_id: str
    version: int
    payload: bytes


def _canonical(device_id: str, tokens: Tokens) -> bytes | None:
    """The list as its version-0 payload (sorted, so equal lists encode equally); None when
    the contract refuses it (logged and counted)."""
    try:
        return contract.encode_auth_list(0, tokens)
    except contract.ContractError as exc:
        reason = "too_large" if exc.reason == "too_large" else "invalid"
        REFUSED.labels(reason).inc()
        log.error(
            "authorization list of %s refused, the charger keeps its current one: %d cards, %s",
            device_id,
            len(tokens),
            exc,
        )
        return None


def _ensure_rows(session: Session, device_ids: list[str]) -> None:
    """Create missing list records (version 0, no digest) without racing another refresh: a
    plain INSERT would let the loser fail on the key (no savepoint: pysqlite's are unreliable)."""
    for chunk in chunks(device_ids):
        existing = set(
            session.scalars(
                select(AuthorizationList.device_id).where(AuthorizationList.device_id.in_(chunk))
            )
        )
        missing = [d for d in chunk if d not in existing]
        if missing:
            session.execute(
                insert(AuthorizationList)
                .prefix_with("OR IGNORE", dialect="sqlite")
                .prefix_with("IGNORE", dialect="mysql")
                .prefix_with("IGNORE", dialect="mariadb")
                .values([{"device_id": d, "version": 0, "digest": ""} for d in missing])
            )


def _record(session: Session, lists: dict[str, Tokens], force: set[str]) -> list[_Pending]:
    """Bump the version of each list whose digest changed (rows locked, in id order so that
    two refreshes cannot deadlock); what must be sent: changed, never published, or forced."""
    canonical = {d: _canonical(d, t) for d, t in lists.items()}
    ids = sorted(d for d, payload in canonical.items() if payload is not None)
    _ensure_rows(session, ids)
    pending = []
    for chunk in chunks(ids):
        rows = session.scalars(
            select(AuthorizationList)
            .where(AuthorizationList.device_id.in_(chunk))
            .order_by(AuthorizationList.device_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        for row in rows:
            payload = canonical[row.device_id]
            assert payload is not None, "refused lists were left out above"
            digest = hashlib.sha256(payload).hexdigest()
            if digest != row.digest:
                row.version += 1
                row.digest = digest
                row.published_at = None
            elif row.published_at is not None and row.device_id not in force:
                continue
            pending.append(
                _Pending(
                    row.device_id,
                    row.version,
                    contract.encode_auth_list(row.version, lists[row.device_id]),
                )
            )
    return pending


def _publish(
    session: Session, pending: list[_Pending], publisher: AuthListPublisher
) -> tuple[list[str], set[str]]:
    """Send, then mark published where the version is still the one sent: (published, stale).

    A stale list lost a race: another refresh recorded a newer version while we sent, and our
    older payload may have reached the broker after its newer one. Those are sent again.
    """
    published: list[str] = []
    stale: set[str] = set()
    acknowledged: set[str] = set()
    for start in range(0, len(pending), BATCH):
        batch = pending[start : start + BATCH]
        acknowledged |= publisher.send_all([(item.device_id, item.payload) for item in batch])
    for item in pending:
        if item.device_id not in acknowledged:
            log.warning(
                "authorization list %s of %s stays unpublished until the next refresh",
                item.version,
                item.device_id,
            )
            continue
        marked = session.execute(
            update(AuthorizationList)
            .where(
                AuthorizationList.device_id == item.device_id,
                AuthorizationList.version == item.version,
            )
            .values(published_at=utcnow())
        )
        if marked.rowcount:  # type: ignore[attr-defined]
            published.append(item.device_id)
        else:
            stale.add(item.device_id)
    session.commit()
    return published, stale


def _refresh(
    session: Session,
    by_organization: dict[int, set[str]],
    publisher: AuthListPublisher,
    at: dt.datetime | None,
) -> list[str]:
    at = at or utcnow()
    published: list[str] = []
    force: set[str] = set()
    for _ in range(ROUNDS):
        lists: dict[str, Tokens] = {}
        for organization_id, device_ids in by_organization.items():
            lists.update(_organization_lists(session, organization_id, device_ids, at))
        pending = _record(session, lists, force)
        session.commit()  # the version is recorded before anything reaches the broker
        sent, force = _publish(session, pending, publisher)
        published += sent
        if not force:
            break
        by_organization = {org: ids & force for org, ids in by_organization.items() if ids & force}
    return sorted(set(published))


def refresh_authorization_lists(
    session: Session,
    device_ids: Iterable[str],
    publisher: AuthListPublisher,
    *,
    at: dt.datetime | None = None,
) -> list[str]:
    """Recompute the lists of ``device_ids``, bump the versions that changed, commit, publish
    what changed or was never published; the ids published. Commits ``session``."""
    by_organization: dict[int, set[str]] = defaultdict(set)
    for chunk in chunks(sorted(set(device_ids))):
        for device_id, organization_id in session.execute(
            select(Device.id, Device.organization_id).where(Device.id.in_(chunk))
        ):
            by_organization[organization_id].add(device_id)
    return _refresh(session, dict(by_organization), publisher, at)


def sweep(
    session: Session, publisher: AuthListPublisher, *, at: dt.datetime | None = None
) -> list[str]:
    """Refresh every charger whose list was never published (the broker was down); the ids
    published. For a periodic worker, next to the configuration re-sends."""
    device_ids = list(
        session.scalars(
            select(AuthorizationList.device_id).where(AuthorizationList.published_at.is_(None))
        )
    )
    return refresh_authorization_lists(session, device_ids, publisher, at=at)
