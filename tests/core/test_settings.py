"""Settings: declared once, read from env and YAML, all problems reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from retailml.core.errors import ConfigError
from retailml.core.settings import Settings, load_settings


def test_defaults_put_the_workspace_in_the_current_directory(settings: Settings) -> None:
    fresh = load_settings(home=Path("workspace"))
    assert fresh.home == Path("workspace")
    assert fresh.database_url is None
    assert fresh.log_level == "INFO"
    assert fresh.seed == 42


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"


def test_environment_variables_use_the_retailml_prefix(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAILML_SEED", "7")
    monkeypatch.setenv("RETAILML_LOG_LEVEL", "DEBUG")
    loaded = load_settings()
    assert loaded.seed == 7
    assert loaded.log_level == "DEBUG"


def test_yaml_file_is_read_and_environment_wins(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "retailml.yaml").write_text("seed: 11\nlog_level: WARNING\n")
    monkeypatch.setenv("RETAILML_LOG_LEVEL", "ERROR")
    loaded = load_settings()
    assert loaded.seed == 11
    assert loaded.log_level == "ERROR"


def test_retailml_config_names_another_yaml_file(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "prod.yaml"
    other.write_text("seed: 99\n")
    monkeypatch.setenv("RETAILML_CONFIG", str(other))
    assert load_settings().seed == 99


def test_all_invalid_settings_are_reported_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAILML_SEED", "-3")
    monkeypatch.setenv("RETAILML_LOG_LEVEL", "LOUD")
    monkeypatch.setenv("RETAILML_DATABASE_URL", "mysql://x")
    with pytest.raises(ConfigError, match="3 invalid settings") as info:
        load_settings()
    message = str(info.value)
    assert "RETAILML_SEED: got '-3'; expected greater than or equal to 0" in message
    assert "RETAILML_LOG_LEVEL: got 'LOUD'" in message
    assert "'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in message
    assert "RETAILML_DATABASE_URL: got 'mysql://x'" in message
    assert "sqlite:/// or postgresql://" in message


def test_unknown_yaml_key_lists_the_known_settings(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "retailml.yaml").write_text("sed: 1\n")
    with pytest.raises(ConfigError, match=r"sed: unknown setting .*known settings: .*seed"):
        load_settings()


def test_yaml_that_is_not_a_mapping_is_rejected(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "retailml.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        load_settings()


def test_broken_yaml_is_rejected_with_the_file_name(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "retailml.yaml").write_text("seed: [1\n")
    with pytest.raises(ConfigError, match=r"retailml.yaml: expected a YAML mapping.*could not"):
        load_settings()


def test_plain_postgresql_urls_use_psycopg(settings: Settings) -> None:
    loaded = load_settings(database_url="postgresql://u@h/db")
    assert loaded.resolved_database_url == "postgresql+psycopg://u@h/db"


def test_default_database_is_sqlite_in_the_workspace(settings: Settings) -> None:
    assert (
        settings.resolved_database_url == f"sqlite:///{(settings.home / 'platform.db').resolve()}"
    )
