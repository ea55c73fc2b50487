"""The HTTP layer: the REST API's shared machinery (authentication, the one error body, fields,
blueprints, scoping of the caller, the app's publishers) and one route package per domain.

It imports the domains and translates between them and HTTP; no domain imports it
(docs/architecture.md).
"""
