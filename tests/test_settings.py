"""Settings: defaults give the embedded mode; AMPFLEET_* overrides; errors name the variable."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from mypy import api as mypy_api

from cloud.settings import DECLARED, Settings, SettingsError, markdown_table

ROOT = Path(__file__).parent.parent


def test_defaults_are_the_embedded_mode() -> None:
    settings = Settings.load(environ={})
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith(".ampfleet/ampfleet.db")
    assert settings.broker == "embedded" and settings.telemetry_store == "sqlite"
    assert settings.public_url == "http://127.0.0.1:8080"


def test_environment_overrides_every_setting_by_its_documented_name() -> None:
    env = {
        "AMPFLEET_API_PORT": "9000",
        "AMPFLEET_DATA_DIR": "/srv/af",
        "AMPFLEET_TESTING": "yes",
        "AMPFLEET_DATABASE_URL": "mysql+pymysql://u@db/af",
    }
    settings = Settings.load(environ=env)
    assert settings.api_port == 9000 and settings.data_dir == Path("/srv/af")
    assert settings.testing is True and settings.database_url == "mysql+pymysql://u@db/af"
    assert settings.jwt_private_key_file == "/srv/af/jwt-signing-key.pem"
    assert settings.public_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AMPFLEET_API_PORT": "eighty"}, "AMPFLEET_API_PORT"),
        ({"AMPFLEET_API_PORT": "0"}, "AMPFLEET_API_PORT"),
        ({"AMPFLEET_BROKER": "kafka"}, "AMPFLEET_BROKER"),
        ({"AMPFLEET_TESTING": "maybe"}, "AMPFLEET_TESTING"),
        ({"AMPFLEET_PASSWORD_KDF": "insecure-fast-for-tests"}, "AMPFLEET_PASSWORD_KDF"),
        ({"AMPFLEET_TLS_CERT_FILE": "/c.pem"}, "AMPFLEET_TLS_KEY_FILE"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.load(environ=env)


def test_tests_override_with_a_mapping_and_unknown_names_are_refused() -> None:
    assert Settings.load({"api_port": 1234}, environ={}).api_port == 1234
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.load({"api_prot": 1234}, environ={})


def test_the_configuration_reference_matches_the_code() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert markdown_table() in doc, "regenerate with: ampfleet settings --markdown"
    for setting in DECLARED:
        assert setting.env in doc


def test_the_typed_fields_and_the_declarations_agree() -> None:
    fields = typing.get_type_hints(Settings)
    assert list(fields) == [setting.name for setting in DECLARED]
    for setting in DECLARED:
        annotated = fields[setting.name]
        # bool is an int to isinstance: an int setting must not default to True, nor the reverse.
        parsed = setting.parse("1")
        for value in (setting.default, parsed):
            assert isinstance(value, annotated), (setting.name, value, annotated)
            assert isinstance(value, bool) == (annotated is bool), (setting.name, value)


def test_values_and_attributes_are_the_same_settings_in_declaration_order() -> None:
    settings = Settings.load(environ={})
    assert list(settings.values) == [setting.name for setting in DECLARED]
    for name, value in settings.values.items():
        assert getattr(settings, name) == value
    assert settings.data_path == settings.data_dir == Path(".ampfleet")
    with pytest.raises(AttributeError):
        getattr(settings, "brokr_url")  # noqa: B009 - the name is misspelt on purpose
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.api_port = 1  # type: ignore[misc]


def test_a_misspelt_or_mistyped_setting_is_a_mypy_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from cloud.settings import Settings\n"
        "def url(settings: Settings) -> str:\n"
        "    port: str = settings.api_port\n"
        "    return settings.brokr_url\n"
    )
    monkeypatch.chdir(ROOT)  # so that mypy finds the cloud package
    out, err, status = mypy_api.run(
        ["--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(snippet)]
    )
    assert status == 1, out + err
    assert ':3: error: Incompatible types in assignment (expression has type "int"' in out
    assert ':4: error: "Settings" has no attribute "brokr_url"' in out
