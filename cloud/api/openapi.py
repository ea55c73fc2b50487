"""The answers every operation of a kind can give, declared once in the OpenAPI document.

Some answers do not come from a view's own code but from the machinery around every view of a
kind, so each view would have to repeat them (and forget one): a path naming a record that does
not exist or is out of the caller's scope (404), a body that is not JSON at all (400, from the
arguments parser, before the schema's 422), and a write that the database refuses as a conflict
(409, from the IntegrityError handler, besides each view's own uniqueness and rail checks).
flask-smorest's catch-all ``default`` response covers them only vaguely; a client (and the
fuzzing run, tests/api/test_fuzz.py) needs the status codes themselves.
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin

WRITES = frozenset({"post", "put", "patch", "delete"})


class CommonResponses(BasePlugin):
    """apispec plugin: declare 404, 400 and 409 where the machinery can answer them."""

    def operation_helper(
        self,
        path: str | None = None,
        operations: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        for method, operation in (operations or {}).items():
            wanted = []
            if path and "{" in path:
                wanted.append((404, "NOT_FOUND"))
            if "requestBody" in operation:
                wanted.append((400, "BAD_REQUEST"))
            if method in WRITES and operation.get("security"):
                wanted.append((409, "CONFLICT"))
            responses: dict[Any, Any] = operation.setdefault("responses", {})
            declared = {str(code) for code in responses}
            for code, name in wanted:
                if str(code) not in declared:
                    responses[str(code)] = name
