"""The roles a parameter schema may name are the roles the cloud seeds; parameters sits below
the cloud and never imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import parameters
from cloud.identity.permissions import SYSTEM_ROLES


def test_the_cloud_seeds_exactly_the_roles_of_the_schema_language() -> None:
    assert set(SYSTEM_ROLES) == parameters.ROLES


def test_parameters_imports_neither_the_cloud_nor_the_broker() -> None:
    for module in sorted(Path(parameters.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n.split(".")[0] in ("cloud", "broker")], module
