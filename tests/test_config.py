"""Settings: ``waquality.config.load_settings`` with explicit environments (no process state)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from waquality.config import Settings, load_settings
from waquality.errors import ConfigError

DATA = Path(__file__).parent / "data"
EMPTY_TOML = str(DATA / "empty.toml")


def load(**variables: str) -> Settings:
    """Settings from ``WAQUALITY_<NAME>`` variables only (the empty TOML file)."""
    env = {"WAQUALITY_CONFIG": EMPTY_TOML}
    env.update({f"WAQUALITY_{name.upper()}": value for name, value in variables.items()})
    return load_settings(env)


def config_error(env: dict[str, str], **kwargs: str | Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(env, **kwargs)
    return str(caught.value)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults -----------------------------------------------------------------------------------


def test_defaults_without_any_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./waquality.toml here
    settings = load_settings({})
    assert settings.database_url.get_secret_value() == "sqlite:///./waquality.db"
    assert settings.app_secret == []
    assert settings.app_secrets == []
    assert settings.verify_token is None
    assert settings.api_token is None
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.customer_data_retention == timedelta(days=30)
    assert settings.log_level == "INFO"
    assert settings.workers >= 1
    assert settings.batch_size >= 1


def test_unrelated_environment_variables_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "DATABASE_URL": "mysql://x",
            "TEST_DATABASE_URL": "postgresql://elsewhere/db",
        }
    )
    assert settings.database_url.get_secret_value() == "sqlite:///./waquality.db"


def test_values_from_the_environment() -> None:
    settings = load(
        database_url="postgresql+psycopg://user:pw@db.internal:5432/waquality",
        verify_token="verify-me",
        api_token="api-secret-token",
        host="192.0.2.10",
        port="9123",
        log_level="debug",
    )
    assert settings.database_url.get_secret_value() == (
        "postgresql+psycopg://user:pw@db.internal:5432/waquality"
    )
    assert settings.verify_token is not None
    assert settings.verify_token.get_secret_value() == "verify-me"
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "api-secret-token"
    assert settings.host == "192.0.2.10"
    assert settings.port == 9123
    assert settings.log_level == "DEBUG"


def test_the_real_process_environment_is_the_default_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("WAQUALITY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WAQUALITY_CONFIG", EMPTY_TOML)
    monkeypatch.setenv("WAQUALITY_PORT", "8765")
    assert load_settings().port == 8765


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("port", "not-a-number"),
        ("port", "0"),
        ("port", "70000"),
        ("log_level", "LOUD"),
        ("database_url", "mysql://user@host/db"),
        ("workers", "-1"),
        ("batch_size", "0"),
    ],
)
def test_wrong_values_stop_with_a_message_naming_the_variable(name: str, value: str) -> None:
    message = config_error({"WAQUALITY_CONFIG": EMPTY_TOML, f"WAQUALITY_{name.upper()}": value})
    assert f"WAQUALITY_{name.upper()}" in message


def test_an_empty_api_token_is_not_accepted_as_a_token() -> None:
    """``WAQUALITY_API_TOKEN=`` must not become a token no request can ever present."""
    env = {"WAQUALITY_CONFIG": EMPTY_TOML, "WAQUALITY_API_TOKEN": ""}
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        assert "WAQUALITY_API_TOKEN" in str(exc)
    else:
        assert settings.api_token is None or settings.api_token.get_secret_value() != ""


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("90", timedelta(seconds=90)),
        ("0", timedelta(0)),
        ("86400", timedelta(days=1)),
        (" 12h ", timedelta(hours=12)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert load(customer_data_retention=text).customer_data_retention == expected


@pytest.mark.parametrize("text", ["", "abc", "5 minutes", "-5s", "5w", "1h30", "s", "1y", "h1"])
def test_bad_durations_are_refused(text: str) -> None:
    message = config_error(
        {"WAQUALITY_CONFIG": EMPTY_TOML, "WAQUALITY_CUSTOMER_DATA_RETENTION": text}
    )
    assert "WAQUALITY_CUSTOMER_DATA_RETENTION" in message
    assert "duration" in message


def test_durations_in_toml_as_string_or_seconds(tmp_path: Path) -> None:
    as_string = write(tmp_path / "a.toml", 'customer_data_retention = "2d"\n')
    as_number = write(tmp_path / "b.toml", "customer_data_retention = 3600\n")
    assert load_settings({"WAQUALITY_CONFIG": str(as_string)}).customer_data_retention == (
        timedelta(days=2)
    )
    assert load_settings({"WAQUALITY_CONFIG": str(as_number)}).customer_data_retention == (
        timedelta(hours=1)
    )


@pytest.mark.parametrize("value", ["-5", "true", '"soon"'])
def test_bad_durations_in_toml_are_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path / "bad.toml", f"customer_data_retention = {value}\n")
    assert "customer_data_retention" in config_error({"WAQUALITY_CONFIG": str(path)}).lower()


# -- app secrets --------------------------------------------------------------------------------


def test_several_app_secrets_comma_separated() -> None:
    settings = load(app_secret="first-secret, second-secret ,third,")
    assert settings.app_secrets == [b"first-secret", b"second-secret", b"third"]


def test_a_single_app_secret() -> None:
    assert load(app_secret="only-one").app_secrets == [b"only-one"]


def test_app_secrets_as_a_toml_list(tmp_path: Path) -> None:
    path = write(tmp_path / "w.toml", 'app_secret = ["one", "two"]\n')
    assert load_settings({"WAQUALITY_CONFIG": str(path)}).app_secrets == [b"one", b"two"]


# -- *_FILE secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["database_url", "app_secret", "verify_token", "api_token"])
def test_secret_from_a_file_with_its_trailing_newline_stripped(tmp_path: Path, name: str) -> None:
    value = "sqlite:///from-file.db" if name == "database_url" else "value-from-file"
    path = write(tmp_path / "secret", value + "\n")
    settings = load_settings(
        {"WAQUALITY_CONFIG": EMPTY_TOML, f"WAQUALITY_{name.upper()}_FILE": str(path)}
    )
    secret = getattr(settings, name)
    if name == "app_secret":
        assert settings.app_secrets == [value.encode()]
    else:
        assert secret.get_secret_value() == value


def test_crlf_line_ending_is_stripped_too(tmp_path: Path) -> None:
    path = write(tmp_path / "token", "windows-token\r\n")
    settings = load_settings(
        {"WAQUALITY_CONFIG": EMPTY_TOML, "WAQUALITY_API_TOKEN_FILE": str(path)}
    )
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "windows-token"


def test_app_secret_file_may_hold_several_secrets(tmp_path: Path) -> None:
    path = write(tmp_path / "secrets", "alpha,beta\n")
    settings = load_settings(
        {"WAQUALITY_CONFIG": EMPTY_TOML, "WAQUALITY_APP_SECRET_FILE": str(path)}
    )
    assert settings.app_secrets == [b"alpha", b"beta"]


def test_secret_and_its_file_both_set_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "token", "from-file\n")
    message = config_error(
        {
            "WAQUALITY_CONFIG": EMPTY_TOML,
            "WAQUALITY_API_TOKEN": "from-env",
            "WAQUALITY_API_TOKEN_FILE": str(path),
        }
    )
    assert "WAQUALITY_API_TOKEN" in message
    assert "WAQUALITY_API_TOKEN_FILE" in message
    assert "from-env" not in message
    assert "from-file" not in message


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_secret_file_is_an_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope" if kind == "missing" else tmp_path
    message = config_error({"WAQUALITY_CONFIG": EMPTY_TOML, "WAQUALITY_APP_SECRET_FILE": str(path)})
    assert "WAQUALITY_APP_SECRET_FILE" in message
    assert str(path) in message


def test_file_variants_exist_only_for_secrets(tmp_path: Path) -> None:
    path = write(tmp_path / "host", "192.0.2.10\n")
    message = config_error({"WAQUALITY_CONFIG": EMPTY_TOML, "WAQUALITY_HOST_FILE": str(path)})
    assert "WAQUALITY_HOST_FILE" in message


# -- TOML file ----------------------------------------------------------------------------------


FULL_TOML = """\
database_url = "sqlite:///from-toml.db"
app_secret = "toml-secret"
verify_token = "toml-verify"
api_token = "toml-api"
host = "10.0.0.1"
port = 8101
customer_data_retention = "12h"
log_level = "warning"
"""


def test_toml_file_via_waquality_config(tmp_path: Path) -> None:
    path = write(tmp_path / "custom.toml", FULL_TOML)
    settings = load_settings({"WAQUALITY_CONFIG": str(path)})
    assert settings.database_url.get_secret_value() == "sqlite:///from-toml.db"
    assert settings.app_secrets == [b"toml-secret"]
    assert settings.verify_token is not None
    assert settings.verify_token.get_secret_value() == "toml-verify"
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "toml-api"
    assert settings.host == "10.0.0.1"
    assert settings.port == 8101
    assert settings.customer_data_retention == timedelta(hours=12)
    assert settings.log_level == "WARNING"


def test_toml_file_via_the_config_file_argument(tmp_path: Path) -> None:
    path = write(tmp_path / "custom.toml", FULL_TOML)
    assert load_settings({}, config_file=path).port == 8101
    assert load_settings({}, config_file=str(path)).host == "10.0.0.1"


def test_waquality_toml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "waquality.toml", "port = 8202\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).port == 8202


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "custom.toml", FULL_TOML)
    settings = load_settings(
        {"WAQUALITY_CONFIG": str(path), "WAQUALITY_PORT": "8303", "WAQUALITY_API_TOKEN": "env-api"}
    )
    assert settings.port == 8303
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "env-api"
    assert settings.host == "10.0.0.1"  # not overridden: still from the file
    via_argument = load_settings({"WAQUALITY_PORT": "8304"}, config_file=path)
    assert via_argument.port == 8304


def test_secret_file_wins_over_the_toml_file(tmp_path: Path) -> None:
    toml = write(tmp_path / "custom.toml", FULL_TOML)
    secret = write(tmp_path / "token", "file-api\n")
    settings = load_settings(
        {"WAQUALITY_CONFIG": str(toml), "WAQUALITY_API_TOKEN_FILE": str(secret)}
    )
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "file-api"


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    assert str(missing) in config_error({"WAQUALITY_CONFIG": str(missing)})
    assert str(missing) in config_error({}, config_file=missing)


def test_malformed_toml_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "port = = 8000\n[unclosed\n")
    assert str(path) in config_error({"WAQUALITY_CONFIG": str(path)})


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.toml", 'databse_url = "sqlite:///x.db"\nport = 8000\n')
    message = config_error({"WAQUALITY_CONFIG": str(path)})
    assert "databse_url" in message
    assert "unknown" in message.lower()


def test_toml_sections_are_not_settings(tmp_path: Path) -> None:
    path = write(tmp_path / "section.toml", "[server]\nport = 8000\n")
    assert "server" in config_error({"WAQUALITY_CONFIG": str(path)})


def test_wrong_value_in_toml_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", 'port = "eighty"\n')
    assert "port" in config_error({"WAQUALITY_CONFIG": str(path)}).lower()


# -- unknown variables and the single report ----------------------------------------------------


@pytest.mark.parametrize("name", ["WAQUALITY_DATABSE_URL", "WAQUALITY_TOKEN", "WAQUALITY_"])
def test_unknown_waquality_variable_is_an_error(name: str) -> None:
    message = config_error({"WAQUALITY_CONFIG": EMPTY_TOML, name: "x"})
    assert name in message
    assert "unknown" in message.lower()


def test_every_problem_is_listed_in_one_message(tmp_path: Path) -> None:
    both = write(tmp_path / "token", "t\n")
    env = {
        "WAQUALITY_CONFIG": EMPTY_TOML,
        "WAQUALITY_PORT": "not-a-port",
        "WAQUALITY_CUSTOMER_DATA_RETENTION": "forever",
        "WAQUALITY_LOG_LEVEL": "chatty",
        "WAQUALITY_DATABASE_URL": "mysql://u@h/d",
        "WAQUALITY_NOT_A_SETTING": "1",
        "WAQUALITY_API_TOKEN": "x",
        "WAQUALITY_API_TOKEN_FILE": str(both),
        "WAQUALITY_VERIFY_TOKEN_FILE": str(tmp_path / "missing"),
    }
    message = config_error(env)
    for name in (
        "WAQUALITY_PORT",
        "WAQUALITY_CUSTOMER_DATA_RETENTION",
        "WAQUALITY_LOG_LEVEL",
        "WAQUALITY_DATABASE_URL",
        "WAQUALITY_NOT_A_SETTING",
        "WAQUALITY_API_TOKEN_FILE",
        "WAQUALITY_VERIFY_TOKEN_FILE",
    ):
        assert name in message, f"{name} missing from:\n{message}"


def test_value_problems_are_listed_together(tmp_path: Path) -> None:
    path = write(tmp_path / "w.toml", 'host = "h"\nunknown_key = 1\n')
    message = config_error(
        {
            "WAQUALITY_CONFIG": str(path),
            "WAQUALITY_PORT": "x",
            "WAQUALITY_CUSTOMER_DATA_RETENTION": "y",
        }
    )
    for name in ("WAQUALITY_PORT", "WAQUALITY_CUSTOMER_DATA_RETENTION", "unknown_key"):
        assert name in message, f"{name} missing from:\n{message}"


# -- secrets never printed ----------------------------------------------------------------------


SECRETS = {
    "database_url": "postgresql+psycopg://admin:db-pass-8127@db:5432/w",
    "app_secret": "app-secret-3341,app-secret-9982",
    "verify_token": "verify-token-5521",
    "api_token": "api-token-7730",
}
SECRET_FRAGMENTS = [
    "db-pass-8127",
    "app-secret-3341",
    "app-secret-9982",
    "verify-token-5521",
    "api-token-7730",
]


def test_secrets_never_appear_in_repr_or_str() -> None:
    settings = load(**SECRETS)
    assert settings.api_token is not None  # loaded for real
    assert settings.api_token.get_secret_value() == "api-token-7730"
    shown = [
        repr(settings),
        str(settings),
        f"{settings}",
        f"{settings!r}",
        repr(settings.model_dump()),
        str(settings.app_secret),
    ]
    for text in shown:
        for fragment in SECRET_FRAGMENTS:
            assert fragment not in text, f"{fragment} shown in {text}"


def test_secrets_from_files_never_appear_in_repr(tmp_path: Path) -> None:
    env = {"WAQUALITY_CONFIG": EMPTY_TOML}
    for name, value in SECRETS.items():
        env[f"WAQUALITY_{name.upper()}_FILE"] = str(write(tmp_path / name, value + "\n"))
    settings = load_settings(env)
    for fragment in SECRET_FRAGMENTS:
        assert fragment not in repr(settings)
        assert fragment not in str(settings)


def test_secrets_never_appear_in_configuration_errors(tmp_path: Path) -> None:
    env = {
        "WAQUALITY_CONFIG": EMPTY_TOML,
        "WAQUALITY_DATABASE_URL": "mysql://admin:db-pass-8127@db/w",
        "WAQUALITY_API_TOKEN": "api-token-7730",
        "WAQUALITY_APP_SECRET": "app-secret-3341",
        "WAQUALITY_PORT": "bad",
    }
    message = config_error(env)
    assert "WAQUALITY_DATABASE_URL" in message
    for fragment in SECRET_FRAGMENTS:
        assert fragment not in message
