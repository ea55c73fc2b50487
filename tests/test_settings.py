"""Settings: defaults give the embedded mode; AMPFLEET_* overrides; errors name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.settings import DECLARED, Settings, SettingsError, markdown_table


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
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    assert markdown_table() in doc, "regenerate with: ampfleet settings --markdown"
    for setting in DECLARED:
        assert setting.env in doc
