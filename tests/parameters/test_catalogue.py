"""parameters.family_of: the shipped families by id, one cache, one error."""

from __future__ import annotations

import pytest

import parameters
from cloud.configuration import UnknownFamilyError as ConfigurationsUnknownFamilyError
from cloud.configuration import schema_rules
from parameters import ParameterSchemaError, UnknownFamilyError, family_of


def test_a_shipped_family_is_found_and_cached() -> None:
    family = family_of("ac22-3p")
    assert family.id == "ac22-3p"
    assert family_of("ac22-3p") is family


@pytest.mark.parametrize("family_id", ["no-such-family", "../ac22-3p", "AC22-3P", "", "a/b"])
def test_an_unknown_family_is_refused_by_name(family_id: str) -> None:
    with pytest.raises(UnknownFamilyError) as caught:
        family_of(family_id)
    assert caught.value.family_id == family_id
    assert str(caught.value) == f"no parameter schema for hardware family {family_id!r}"
    assert isinstance(caught.value, ParameterSchemaError)


def test_the_cloud_catches_the_same_class_under_its_old_names() -> None:
    assert ConfigurationsUnknownFamilyError is UnknownFamilyError is parameters.UnknownFamilyError
    assert schema_rules.family_of is family_of is parameters.family_of
    with pytest.raises(ConfigurationsUnknownFamilyError):
        schema_rules.family_of("no-such-family")
