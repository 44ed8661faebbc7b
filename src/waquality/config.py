"""Settings, read once at start-up from ``WAQUALITY_*`` variables and an optional TOML file.

Precedence: environment > ``NAME_FILE`` (secrets) > TOML file (``waquality.toml``, or the path in
``WAQUALITY_CONFIG``) > defaults. A wrong value stops start-up with every problem listed.
Secrets are :class:`SecretStr`: they print as ``**********``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from waquality.alerting.signal_rules import SignalRuleConfig
from waquality.domain.responses import parse_business_hours
from waquality.errors import ConfigError

PREFIX = "WAQUALITY_"
DEFAULT_CONFIG_FILE = "waquality.toml"
SECRET_FIELDS = (
    "database_url",
    "app_secret",
    "verify_token",
    "api_token",
    "dashboard_password",
    "access_token",
    "alert_urls",
    "customer_id_key",
)
_GRAPH_VERSION = re.compile(r"^v\d+\.\d+$")
_OBJECT_ID = re.compile(r"^[0-9]{1,32}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``7d`` or plain seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("expected a duration such as 30s, 5m, 1h, 7d or plain seconds")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _split_urls(value: Any) -> Any:
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,]+", value) if part]
    return value


def parse_bool(value: Any) -> bool:
    """``true``/``false`` or ``1``/``0``; anything else is an error, not a guess."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError("expected true or false")


def _durations(value: Any) -> Any:
    return [parse_duration(v) for v in _split_list(value)] if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Flag = Annotated[bool, BeforeValidator(parse_bool)]
DurationList = Annotated[list[timedelta], BeforeValidator(_durations)]
SecretList = Annotated[list[SecretStr], BeforeValidator(_split_list)]
IdList = Annotated[list[str], BeforeValidator(_split_list)]
UrlList = Annotated[list[SecretStr], BeforeValidator(_split_urls)]


class AlertRoute(BaseModel):
    """``[[alert_routes]]`` in the config file: alerts whose labels (``severity`` included)
    match all of ``match`` go to ``urls``; the first matching route wins unless it says
    ``continue = true``. Alerts no route takes go to ``WAQUALITY_ALERT_URLS``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: dict[str, str] = Field(default_factory=dict)
    urls: UrlList
    continue_: bool = Field(False, alias="continue")


class AlertRuleConfig(BaseModel):
    """``[[alert_rules]]`` in the config file: an alert on events of one webhook field whose
    value matches ``match`` (dotted paths → value, ``a|b`` for either; ``kind`` is the event's
    label), ended by events matching ``resolve``. ``summary`` may name paths in braces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    field: str
    match: dict[str, str] = Field(min_length=1)
    resolve: dict[str, str] | None = None
    severity: str = Field("warning", pattern="^(critical|warning)$")
    summary: str
    description: str = ""
    identity: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    database_url: SecretStr = Field(
        SecretStr("sqlite:///./waquality.db"),
        description="SQLAlchemy URL: sqlite:///PATH (default ./waquality.db) or "
        "postgresql+psycopg://USER:PASSWORD@HOST/DB.",
    )
    app_secret: SecretList = Field(
        default_factory=list,
        description="App secret(s) that sign webhooks, comma-separated (one per subscribed app).",
    )
    verify_token: SecretStr | None = Field(
        None, description="The verify token typed into the App Dashboard (handshake)."
    )
    api_token: SecretStr | None = Field(
        None, description="Bearer token for the HTTP API. Generated on first start when unset."
    )
    dashboard_password: SecretStr | None = Field(
        None,
        min_length=8,
        description="A password for the dashboard's login, beside the API token (which always "
        "works); at least 8 characters.",
    )
    host: str = Field("127.0.0.1", description="Address `serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `serve` listens on.")
    workers: int = Field(
        1,
        ge=0,
        le=16,
        description="Processing threads in the child process `serve` supervises (which also "
        "polls and delivers alerts); 0: none, run `waquality worker` elsewhere.",
    )
    batch_size: int = Field(
        500,
        ge=1,
        le=5000,
        description="Most bodies processed per transaction (SQLite starts from 10 after an idle "
        "moment and keeps to 10 in a burst, so acknowledgements never wait long).",
    )
    customer_data_retention: Duration = Field(
        timedelta(days=30),
        description="How long customer data is kept: raw `messages`/`user_preferences` "
        "payloads, messages, conversations and responses (the per-hour figures stay).",
    )
    tracker: Flag = Field(
        True,
        description="Track conversations from `messages` webhooks and logged messages: "
        "response times and delivery signals.",
    )
    message_bodies: Flag = Field(
        True,
        description="Keep the text of messages (what customers typed or tapped, what was logged); "
        "false: metadata only, and raw payloads lose their text once processed.",
    )
    customer_id_key: SecretStr | None = Field(
        None,
        description="Store customer ids (wa_id, user id) as keyed hashes (HMAC-SHA256 with this "
        "key) in messages, conversations and raw payloads once processed; unset: as they are.",
    )
    conversation_gap: Duration = Field(
        timedelta(hours=24),
        description="A conversation ends after this long without a message (the customer-service "
        "window).",
    )
    response_senders: IdList = Field(
        default_factory=list,
        description="Senders whose replies count as responses, comma-separated (bot, agent, "
        "campaign, unknown); unset: every sender.",
    )
    business_hours: str | None = Field(
        None,
        description="Opening hours such as `mon-fri 09:00-17:00`: the response clock runs only "
        "inside them; unset: always.",
    )
    time_zone: str = Field(
        "UTC", description="Time zone of business hours and of hourly, daily and weekly figures."
    )
    response_targets: DurationList = Field(
        default_factory=lambda: [timedelta(minutes=1), timedelta(minutes=5), timedelta(hours=1)],
        description="Targets whose share of responses within them every summary reports.",
    )
    write_timeout: Duration = Field(
        timedelta(seconds=10),
        description="How long a write waits for a lock (SQLite's file, PostgreSQL's rows and "
        "tables) before giving up: a webhook then answers 503 and Meta retries.",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    waba_ids: IdList = Field(
        default_factory=list,
        description="WABAs to poll, comma-separated (more can be added through the API).",
    )
    business_ids: IdList = Field(
        default_factory=list,
        description="Business portfolios whose owned and client WABAs are discovered and polled.",
    )
    access_token: SecretStr | None = Field(
        None, description="Graph API access token used for every WABA without a token of its own."
    )
    access_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        json_schema_extra={"config_file_only": True},
        description="A `[access_tokens]` table: WABA or portfolio id → its own access token.",
    )
    graph_url: str = Field("https://graph.facebook.com", description="Graph API base URL.")
    graph_version: str = Field("v24.0", description="Graph API version, such as v24.0.")
    poll_interval: Duration = Field(
        timedelta(minutes=5), description="Time between two polls of a WABA (jittered ±10%)."
    )
    graph_calls_per_hour: int = Field(
        150,
        ge=1,
        le=5000,
        description="Graph API calls allowed per WABA per rolling hour (Meta allows 200).",
    )
    graph_timeout: Duration = Field(
        timedelta(seconds=10), description="Timeout of one Graph API request."
    )
    reread_delay: Duration = Field(
        timedelta(seconds=30),
        description="Wait after a phone-number or template webhook before re-reading that object; "
        "the webhooks that arrive meanwhile share the read.",
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
        return level

    alert_urls: UrlList = Field(
        default_factory=list,
        description="Where every alert goes: Apprise URLs (slack://, mailto://, json://, ...) "
        "or webhook+https://... for the structured JSON webhook; spaces or commas between.",
    )
    alert_routes: list[AlertRoute] = Field(
        default_factory=list,
        json_schema_extra={"config_file_only": True},
        description="`[[alert_routes]]` tables: `match` (labels, severity included), `urls`, "
        "`continue`; the first match wins, unmatched alerts go to the alert URLs.",
    )
    alert_rules: list[AlertRuleConfig] = Field(
        default_factory=list,
        json_schema_extra={"config_file_only": True},
        description="`[[alert_rules]]` tables: your own alerts on webhook events (see Alerts).",
    )
    signal_rules: Annotated[list[SignalRuleConfig], BeforeValidator(SignalRuleConfig.effective)] = (
        Field(
            default_factory=list,
            json_schema_extra={"config_file_only": True},
            description="`[[signal_rules]]` tables: alerts on response times and delivery signals "
            "(see Alerts); the built-in ones are on unless a table of the same name says "
            "`enabled = false`.",
        )
    )
    alert_repeat_interval: Duration = Field(
        timedelta(hours=4), description="A firing alert is notified again after this long."
    )
    alert_group_by: IdList = Field(
        default_factory=lambda: ["rule", "waba_id"],
        description="Labels that group warnings into one notification (critical ones go alone).",
    )
    alert_group_wait: Duration = Field(
        timedelta(seconds=30), description="How long a new group of warnings waits for more."
    )
    alert_group_interval: Duration = Field(
        timedelta(minutes=5), description="Least time between two notifications of one group."
    )
    webhook_silence_alert: Duration | None = Field(
        None,
        description="Alert when a watched WABA sends no webhook for this long (unset: never).",
    )
    signature_alert_threshold: int = Field(
        20,
        ge=0,
        description="Alert when this many webhook POSTs are refused for their signature within "
        "the signature alert window (0: never).",
    )
    signature_alert_window: Duration = Field(
        timedelta(minutes=5), description="The window the signature alert threshold counts in."
    )
    public_url: str | None = Field(
        None, description="This instance's address as people reach it, for links in alerts."
    )

    @field_validator("graph_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _GRAPH_VERSION.match(value):
            raise ValueError("expected a version such as v24.0")
        return value

    @field_validator("graph_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("expected an http(s) URL")
        return value.rstrip("/")

    @field_validator("waba_ids", "business_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _OBJECT_ID.match(v)]
        if bad:
            raise ValueError(f"not numeric ids: {', '.join(bad)}")
        return list(dict.fromkeys(value))

    @field_validator("poll_interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=10):
            raise ValueError("must be at least 10s")
        return value

    @field_validator("response_senders")
    @classmethod
    def _senders(cls, value: list[str]) -> list[str]:
        known = {"bot", "agent", "campaign", "unknown"}
        bad = [v for v in value if v.lower() not in known]
        if bad:
            raise ValueError(
                f"unknown sender kinds: {', '.join(bad)} (expected {', '.join(sorted(known))})"
            )
        return [v.lower() for v in value]

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a time zone name such as Europe/Berlin") from None
        return value

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is not None:
            parse_business_hours(value)
        return value

    @field_validator("response_targets")
    @classmethod
    def _targets(cls, value: list[timedelta]) -> list[timedelta]:
        if not value or any(t <= timedelta(0) for t in value):
            raise ValueError("expected one or more durations above zero")
        return sorted(set(value))

    @field_validator("verify_token", "api_token", "access_token", "customer_id_key")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty: give a value or leave the setting out")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith(("sqlite:", "postgresql")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        return value

    @property
    def app_secrets(self) -> list[bytes]:
        return [s.get_secret_value().encode() for s in self.app_secret]

    def token_for(self, object_id: str) -> str | None:
        """The access token configured for a WABA or portfolio, else the default one."""
        token = self.access_tokens.get(object_id) or self.access_token
        return token.get_secret_value() if token else None


def load_settings(
    environ: Mapping[str, str] | None = None, *, config_file: str | Path | None = None
) -> Settings:
    """Read the settings once; raises :class:`ConfigError` listing every problem."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = _read_toml(env, config_file)
    problems: list[str] = []
    known = set(Settings.model_fields)
    for name, raw in env.items():
        if not name.startswith(PREFIX) or name == PREFIX + "CONFIG":
            continue
        key = name[len(PREFIX) :].lower()
        if key.endswith("_file") and key[:-5] in SECRET_FIELDS:
            secret = key[:-5]
            if PREFIX + secret.upper() in env:
                problems.append(f"{name}: set either {PREFIX}{secret.upper()} or {name}, not both")
                continue
            try:
                values[secret] = Path(raw).read_text().rstrip("\r\n")
            except OSError as exc:
                problems.append(f"{name}: cannot read {raw!r}: {exc.strerror}")
        elif key in known:
            values[key] = raw
        else:
            problems.append(f"{name}: unknown setting")
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        problems += [_describe(err) for err in exc.errors()]
    if problems:
        raise ConfigError(_report(problems))
    return settings


def _read_toml(env: Mapping[str, str], config_file: str | Path | None) -> dict[str, Any]:
    explicit = config_file or env.get(PREFIX + "CONFIG")
    path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    if not path.exists():
        if explicit:
            raise ConfigError(f"configuration file {str(path)!r} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {str(path)!r} cannot be read: {exc}") from None
    return {str(k): v for k, v in data.items()}


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"] if not isinstance(p, int)) or "settings"
    name = PREFIX + where.upper() if where in Settings.model_fields else where
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    return f"{name}: {message}"


def _report(problems: list[str]) -> str:
    return "invalid configuration:\n" + "\n".join(f"  - {p}" for p in sorted(set(problems)))
