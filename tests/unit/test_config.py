"""Settings: TOML plus environment overrides, one clear line for every bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from fleetpulse.config import AmqpSettings, Settings, load_settings, mask_url
from fleetpulse.errors import ConfigError


def test_defaults_match_the_design() -> None:
    s = load_settings(environ={})
    assert s.agent.heartbeat_interval_s == 30.0
    assert s.ingest.offline_after_s == 90.0
    assert s.ingest.offline_check_interval_s == 5.0
    assert s.api.port == 8000
    assert s.amqp.url.startswith("amqp://")


def test_toml_file_then_environment_override(tmp_path: Path) -> None:
    file = tmp_path / "fleetpulse.toml"
    file.write_text(
        '[agent]\nheartbeat_interval_s = 10\npool = "render"\n[api]\nport = 9000\n'
        'auth_tokens = ["a", "b"]\n'
    )
    s = load_settings(file, environ={"FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": "2.5"})
    assert s.agent.heartbeat_interval_s == 2.5
    assert s.agent.pool == "render"
    assert s.api.port == 9000
    assert s.api.auth_tokens == ["a", "b"]


def test_config_file_from_environment(tmp_path: Path) -> None:
    file = tmp_path / "x.toml"
    file.write_text("[ingest]\noffline_after_s = 12\n")
    s = load_settings(environ={"FLEETPULSE_CONFIG": str(file)})
    assert s.ingest.offline_after_s == 12.0


def test_environment_lists_and_booleans_and_none() -> None:
    s = load_settings(
        environ={
            "FLEETPULSE_API_AUTH_TOKENS": "t1, t2",
            "FLEETPULSE_INGEST_REQUIRE_USER_ID": "true",
            "FLEETPULSE_AGENT_POOL": "",
        }
    )
    assert s.api.auth_tokens == ["t1", "t2"]
    assert s.ingest.require_user_id is True
    assert s.agent.pool is None


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": "abc"}, "agent.heartbeat_interval_s"),
        ({"FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": "-1"}, "'-1'"),
        ({"FLEETPULSE_API_PORT": "99999"}, "api.port"),
        ({"FLEETPULSE_INGEST_REQUIRE_USER_ID": "maybe"}, "ingest.require_user_id"),
    ],
)
def test_bad_environment_value_names_setting_and_value(
    environ: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    assert "environment FLEETPULSE_" in message


def test_bad_toml_value_names_file(tmp_path: Path) -> None:
    file = tmp_path / "f.toml"
    file.write_text('[agent]\nheartbeat_interval_s = "soon"\n')
    with pytest.raises(ConfigError, match=r"agent\.heartbeat_interval_s from .*f\.toml = 'soon'"):
        load_settings(file, environ={})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[agent]\nheartbeat_interval = 3\n", "unknown setting agent.heartbeat_interval"),
        ("[agnet]\n", "unknown section [agnet]"),
        ("agent = 3\n", "must be a table"),
        ("[agent\n", "not valid TOML"),
    ],
)
def test_bad_files_are_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    file = tmp_path / "f.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(file, environ={})
    assert needle in str(info.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_secrets_are_masked_in_repr() -> None:
    s = load_settings(
        environ={
            "FLEETPULSE_AMQP_URL": "amqp://agent:s3cret@broker:5672/",
            "FLEETPULSE_DATABASE_URL": "postgresql://u:hunter2@db/fp",
            "FLEETPULSE_API_AUTH_TOKENS": "tok-abc",
        }
    )
    text = repr(s)
    assert "s3cret" not in text
    assert "hunter2" not in text
    assert "tok-abc" not in text
    assert "amqp://agent:***@broker:5672/" in text


def test_secret_in_error_line_is_masked() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FLEETPULSE_API_AUTH_TOKENS": "", "FLEETPULSE_API_PORT": "x"})
    assert "api.port" in str(info.value)


def test_mask_url() -> None:
    assert mask_url("amqp://a:b@h:1/v") == "amqp://a:***@h:1/v"
    assert mask_url("amqp://h/") == "amqp://h/"


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.api.port = 1  # type: ignore[misc]


def test_readme_settings_table_is_generated_from_the_field_docstrings() -> None:
    """README's reference table is what ``scripts/settings_table.py`` renders from config.py."""
    root = Path(__file__).resolve().parents[2]
    check = subprocess.run(
        [sys.executable, str(root / "scripts" / "settings_table.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    readme = (root / "README.md").read_text(encoding="utf-8")
    for section in msgspec.structs.fields(Settings):
        for field in msgspec.structs.fields(section.type):
            assert f"| `{section.name}.{field.name}` |" in readme


def test_several_broker_urls_from_environment_and_file(tmp_path: Path) -> None:
    env = {"FLEETPULSE_AMQP_URLS": "amqp://u:pw1@n1:5672/, amqp://u:pw1@n2:5672/"}
    s = load_settings(environ=env)
    assert s.amqp.broker_urls() == ["amqp://u:pw1@n1:5672/", "amqp://u:pw1@n2:5672/"]
    assert "pw1" not in repr(s.amqp)
    assert load_settings(environ={}).amqp.broker_urls() == [AmqpSettings().url]  # single url
    file = tmp_path / "cluster.toml"
    file.write_text('[amqp]\nurls = ["amqp://n1/", "amqps://n2/"]\n', encoding="utf-8")
    assert load_settings(file, environ={}).amqp.broker_urls() == ["amqp://n1/", "amqps://n2/"]


def test_a_broker_url_that_is_not_amqp_names_the_setting_masked() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FLEETPULSE_AMQP_URLS": "amqp://n1/,http://u:pw2@n2/"})
    line = str(info.value)
    assert "amqp.urls" in line
    assert "FLEETPULSE_AMQP_URLS" in line
    assert "pw2" not in line
