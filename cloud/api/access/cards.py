"""REST resources: /cards, the RFID cards (OCPP idTokens) registered to users.

Holders of ``cards:read`` org-wide see every card of the organization; anyone else holding it
(an owner's role narrowed to a site, a charger owner) sees their own cards only. Registering,
changing and deleting cards takes ``cards:write`` org-wide. A change that can alter a local
authorization list (a card registered, enabled or disabled, given to another user, deleted) is
committed with its audit entry first, then the lists of the organization's chargers are
recomputed and those that changed are published (``cloud.charging.authorization``); a label
change alters no list and publishes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from flask.views import MethodView
from sqlalchemy import ColumnElement, Select, or_, select

from cloud.access import outbox
from cloud.access.models import RfidCard
from cloud.api.access.card_schemas import CardQuerySchema, CardSchema, CardUpdateSchema
from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.errors import field_error, forbidden, not_found
from cloud.api.records import commit, ensure_unique
from cloud.api.scoping import org_clause, target_org
from cloud.audit.service import changes, record
from cloud.db import request_session
from cloud.identity.models import User

log = logging.getLogger(__name__)

READ = "cards:read"
WRITE = "cards:write"

cards = Blueprint(
    "cards",
    __name__,
    url_prefix="/cards",
    description="RFID cards: registered to users, enabled or disabled, put on the local "
    "authorization lists of the chargers their users may use.",
)


def _visible() -> ColumnElement[bool]:
    """SQL condition: the card is the caller's, or in an organization it reads cards of."""
    principal = current_principal()
    clause = org_clause(RfidCard.organization_id, READ)
    if principal.kind == "user":
        return or_(clause, RfidCard.user_id == principal.id)
    return clause


def get_card(card_id: int, permission: str) -> RfidCard:
    """A card the caller may ``permission``: 404 if unseen, 403 if seen but not allowed."""
    card = request_session().get(RfidCard, card_id)
    principal = current_principal()
    if card is None:
        not_found("card")
    own = principal.kind == "user" and card.user_id == principal.id
    if principal.may_in(permission, card.organization_id) or (permission == READ and own):
        return card
    if own or principal.may_in(READ, card.organization_id):
        forbidden(permission)
    not_found("card")


def _check_user(user_id: int, organization_id: int) -> None:
    user = request_session().get(User, user_id)
    if user is None or user.organization_id != organization_id:
        field_error("user_id", "unknown user in the card's organization")


def _request_lists(user_id: int) -> None:
    """Before the commit of a card change: the charging worker republishes the lists it may
    alter (``cloud.access.outbox``), so the change and its request commit together."""
    outbox.request_for_user(request_session(), user_id)


def _describe(card: RfidCard) -> dict[str, Any]:
    return {"uid": card.uid, "user_id": card.user_id, "label": card.label, "enabled": card.enabled}


@cards.route("", endpoint="Cards")
class Cards(MethodView):
    @requires(READ)
    @cards.arguments(CardQuerySchema, location="query")
    @cards.response(200, CardSchema(many=True))
    @cards.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """Search cards by organization, user, uid or whether they are enabled."""
        stmt = select(RfidCard).where(_visible())
        for column in ("organization_id", "user_id", "enabled", "uid"):
            if column in query:
                stmt = stmt.where(getattr(RfidCard, column) == query[column])
        return stmt.order_by(RfidCard.id)

    @requires(WRITE)
    @cards.arguments(CardSchema)
    @cards.response(201, CardSchema)
    def post(self, data: dict[str, Any]) -> RfidCard:
        """Register a card to a user of the organization; its chargers' lists follow.

        A hex uid is stored upper-case; a uid already registered in the organization is a
        409 naming `uid`.
        """
        org_id = target_org(data["organization_id"], WRITE)
        _check_user(data["user_id"], org_id)
        ensure_unique(RfidCard, "uid", data["uid"], organization_id=org_id)
        card = RfidCard(
            organization_id=org_id,
            uid=data["uid"],
            user_id=data["user_id"],
            label=data["label"],
            enabled=data["enabled"],
        )
        session = request_session()
        session.add(card)
        session.flush()
        record(
            session, current_principal(), "card.create", "card", card.id, org_id, _describe(card)
        )
        _request_lists(card.user_id)
        commit()
        return card


@cards.route("/<id:card_id>", endpoint="Card")
class CardItem(MethodView):
    @requires(READ)
    @cards.etag
    @cards.response(200, CardSchema)
    def get(self, card_id: int) -> RfidCard:
        """Read a card."""
        return get_card(card_id, READ)

    @requires(WRITE)
    @cards.etag
    @cards.arguments(CardUpdateSchema)
    @cards.response(200, CardSchema)
    def patch(self, data: dict[str, Any], card_id: int) -> RfidCard:
        """Relabel, enable, disable or give a card to another user of its organization."""
        card = get_card(card_id, WRITE)
        cards.check_etag(card, CardSchema)
        if "user_id" in data:
            _check_user(data["user_id"], card.organization_id)
        previous_user = card.user_id
        diff = changes(card, data)
        if diff:
            record(
                request_session(),
                current_principal(),
                "card.update",
                "card",
                card.id,
                card.organization_id,
                {"uid": card.uid, **diff},
            )
        if "enabled" in diff or "user_id" in diff:
            # Both holders are in the card's organization: one request covers both.
            _request_lists(previous_user)
        commit()
        return card

    @requires(WRITE)
    @cards.etag
    @cards.response(204)
    def delete(self, card_id: int) -> None:
        """Delete a card; it leaves the lists. Its sessions keep the uid as their id_tag."""
        card = get_card(card_id, WRITE)
        cards.check_etag(card, CardSchema)
        session = request_session()
        user_id = card.user_id
        record(
            session,
            current_principal(),
            "card.delete",
            "card",
            card.id,
            card.organization_id,
            _describe(card),
        )
        _request_lists(user_id)
        session.delete(card)
        commit()
