"""The API blueprint: pagination of SQLAlchemy selects with RFC 8288 Link headers, ETags."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import marshmallow as ma
from flask import Request, request
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest import Page
from sqlalchemy import Select, func, select
from webargs.flaskparser import FlaskParser, abort
from werkzeug.exceptions import PreconditionRequired

from cloud.db import request_session

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100


class SelectPage(Page):
    """Pages a select statement with COUNT and LIMIT/OFFSET in the request's session."""

    @property
    def items(self) -> list[Any]:
        params = self.page_params
        if params.first_item >= (self.page_params.item_count or 0):
            return []  # also keeps absurd page numbers away from the database
        stmt: Select[Any] = self.collection
        return list(
            request_session().scalars(stmt.offset(params.first_item).limit(params.page_size))
        )

    @property
    def item_count(self) -> int:
        stmt: Select[Any] = self.collection
        counted = select(func.count()).select_from(stmt.order_by(None).subquery())
        return int(request_session().scalar(counted) or 0)


class ArgumentsParser(FlaskParser):
    """webargs' parser; JSON that Python's decoder gives up on is a 400 like any broken JSON.

    webargs turns only JSONDecodeError into a 400. Nesting deeper than the recursion limit
    (RecursionError) and integers longer than int_max_str_digits (ValueError) escaped as 500s.
    """

    def load_json(self, req: Request, schema: ma.Schema) -> Any:
        try:
            return super().load_json(req, schema)
        except (RecursionError, ValueError) as exc:
            abort(400, exc=exc, messages={"json": ["Invalid JSON body."]})


class Blueprint(SmorestBlueprint):
    """flask-smorest blueprint: paginated lists carry a Link header; If-Match is demanded only
    once the record is found, so an unknown record answers 404 rather than 428."""

    ARGUMENTS_PARSER = ArgumentsParser()

    def _check_precondition(self) -> None:
        """Deferred to check_etag, which views call after loading the record."""

    def check_etag(self, etag_data: Any, etag_schema: Any = None) -> None:
        """428 without If-Match, 412 when it does not match the record's current ETag."""
        if request.method in self.METHODS_NEEDING_CHECK_ETAG and not request.if_match:
            raise PreconditionRequired
        super().check_etag(etag_data, etag_schema)

    def _set_pagination_metadata(self, page_params: Any, result: Any, headers: Any) -> Any:
        result, headers = super()._set_pagination_metadata(page_params, result, headers)
        meta = self._make_pagination_metadata(
            page_params.page, page_params.page_size, page_params.item_count
        )
        rels = {
            "first": meta.get("first_page"),
            "last": meta.get("last_page"),
            "prev": meta.get("previous_page"),
            "next": meta.get("next_page"),
        }
        links = []
        for rel, page in rels.items():
            if page is not None:
                query = {**request.args.to_dict(), "page": page, "page_size": page_params.page_size}
                links.append(f'<{request.base_url}?{urlencode(query)}>; rel="{rel}"')
        if links:
            headers["Link"] = ", ".join(links)
        return result, headers

    def paginated(self) -> Any:
        """Paginate a view that returns a select statement."""
        return self.paginate(SelectPage, page_size=DEFAULT_PAGE_SIZE, max_page_size=MAX_PAGE_SIZE)
