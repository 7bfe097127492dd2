"""Typed settings for every stage, chosen by environment (``GH_`` prefix, ``__`` nesting) or a YAML file.

One :class:`Settings` object is built at the edge (CLI, job entrypoint, Serve replica) and passed
down explicitly. Backends are chosen by URL:

=============  ==============================  ========================================
role           embedded default                real engine
=============  ==============================  ========================================
bus            ``file://<dir>`` (SQLite log)   ``kafka://host:9092[,host2:9092]``
lake           ``file://<dir>``                ``webhdfs://host:9870/<root>``
metadata       ``file://<dir>`` (SQLite docs)  ``mongodb://host:27017/<db>``
tracking       ``sqlite:///<file>``            ``http://host:5000``
=============  ==============================  ========================================

Empty URLs resolve under ``data_dir`` so a fresh checkout runs with nothing to install.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

CONFIG_FILE_ENV = "GH_CONFIG_FILE"


class TopicSettings(BaseModel):
    """Bus topic names, and how topics the product creates are laid out on Kafka (the embedded bus
    has one copy of everything and ignores replication): ``open_bus(url, topics=settings.topics)``
    hands the replication settings to :meth:`app.bus.kafka.KafkaBus.create_topic`. Production runs
    3 replicas with ``min_insync_replicas`` 2 (kuberay/overlays/prod): with the producer's
    ``acks=all``, a record reported written is on at least 2 brokers, and one broker may be down
    without stopping writes. Topics that already exist keep their layout (Kafka does not change the
    replication of an existing topic; ``kafka-reassign-partitions`` does)."""

    sensors: str = "greenhouse.sensors"
    control: str = "greenhouse.control"
    deadletter: str = "greenhouse.deadletter"
    partitions: int = Field(default=4, ge=1, le=256)
    replication_factor: int = Field(default=1, ge=1, le=16, description="copies of each partition on distinct brokers (at most the number of brokers)")
    min_insync_replicas: int = Field(default=1, ge=1, le=16, description="topic config min.insync.replicas: an acks=all write fails unless this many replicas have it (at most replication_factor)")
    # The Kafka producer compresses record batches with this codec; brokers store and serve them
    # compressed, so it cuts bytes on the wire (both ways) and on disk (bench/sink.py measures it).
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> TopicSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas ({self.min_insync_replicas}) is above replication_factor ({self.replication_factor}): no write could ever succeed")
        return self


class IngestSettings(BaseModel):
    """Limits and behaviour of the HTTP ingest gateway."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_records_per_request: int = Field(default=5000, ge=1)
    # Topics devices may produce to; everything else answers 40401.
    topics: list[str] = Field(default_factory=lambda: ["greenhouse.sensors"])
    # Readings stamped further than this into the future are rejected (clock skew guard).
    max_future_skew_s: float = Field(default=86_400.0, ge=0)
    # The cluster id of REST Proxy v3 paths (/v3/clusters/{cluster_id}/...); any other answers 404.
    cluster_id: str = Field(default="greenhouse", pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class SinkSettings(BaseModel):
    """Lake sink job behaviour."""

    group_id: str = "lake-sink"
    # Records per poll, and per chunk of a partition: a chunk is written (one file per
    # greenhouse-day) when it holds this many, has waited chunk_wait_s, or the topic is idle:
    # a poll brought nothing for idle_flush_s (the end of a burst reaches the lake that soon).
    max_batch_records: int = Field(default=20_000, ge=1)
    chunk_wait_s: float = Field(default=2.0, ge=0)
    poll_timeout_s: float = Field(default=1.0, gt=0)
    idle_flush_s: float = Field(default=0.2, gt=0)
    # Files of one chunk written at once (a remote lake's round trips, not its bandwidth, bound one write).
    write_concurrency: int = Field(default=4, ge=1, le=64)
    # Workers of one sink job (Ray actors sharing the partitions; 1: the job's own process).
    workers: int = Field(default=1, ge=1, le=256)
    # A worker's partition lease lasts this long unless renewed (every third of it, and before
    # each chunk): a killed worker's partitions move to the others after at most this long.
    lease_ttl_s: float = Field(default=20.0, ge=1.0, le=600.0)
    # A testing hook: crash (os._exit) at a named phase after N batches. Never set in production.
    failpoint: str | None = None
    # Records retention deleted before the sink read them stop the sink (LostRecordsError, exit 1,
    # gh_bus_offsets_lost_total). True moves on past them, logged and counted: an operator's
    # decision after the loss is understood (jobs.sink --accept-data-loss), never a default.
    accept_data_loss: bool = False


class Limits(BaseModel):
    """Safety limits (percent) and rate-of-change limits (percent per minute) per actuator: no
    setpoint leaves the controller outside them (:func:`app.control.policy.clamp_setpoints`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vent_min_pct: float = Field(default=0.0, ge=0, le=100)
    vent_max_pct: float = Field(default=100.0, ge=0, le=100)
    heat_min_pct: float = Field(default=0.0, ge=0, le=100)
    heat_max_pct: float = Field(default=100.0, ge=0, le=100)
    screen_min_pct: float = Field(default=0.0, ge=0, le=100)
    screen_max_pct: float = Field(default=100.0, ge=0, le=100)
    vent_rate_pct_per_min: float = Field(default=20.0, ge=0)
    heat_rate_pct_per_min: float = Field(default=25.0, ge=0)
    screen_rate_pct_per_min: float = Field(default=20.0, ge=0)

    @model_validator(mode="after")
    def _min_below_max(self) -> Limits:
        for name in ("vent", "heat", "screen"):
            low, high = getattr(self, f"{name}_min_pct"), getattr(self, f"{name}_max_pct")
            if low > high:
                raise ValueError(f"{name}_min_pct ({low}) is above {name}_max_pct ({high})")
        return self

    def bounds(self, actuator: str) -> tuple[float, float]:
        """``(min, max)`` percent of ``actuator`` (a name such as ``heat_pct``)."""
        name = actuator.removesuffix("_pct")
        return getattr(self, f"{name}_min_pct"), getattr(self, f"{name}_max_pct")

    def rate(self, actuator: str) -> float:
        """The most ``actuator`` may move, percent per minute."""
        return float(getattr(self, f"{actuator.removesuffix('_pct')}_rate_pct_per_min"))


class ControlSettings(BaseModel):
    """Control commands: signing, expiry and the dry-run switch."""

    # Ed25519 private key (PEM) the serving side signs commands with. Empty: a key made for this
    # machine under data_dir/secrets (loopback only; elsewhere the services refuse to start).
    signing_key_file: Path | None = None
    # Public keys the actuator side accepts, one PEM per key id (``<key_id>.pub.pem``); several
    # during a rotation. Empty: data_dir/secrets/command-keys.
    public_keys_dir: Path | None = None
    max_clock_skew_s: float = Field(default=30.0, ge=0, le=3600, description="commands issued further than this in the future are refused")
    # Actuator side: highest applied sequence per greenhouse and recent command ids (SQLite), so
    # replay protection survives a restart. Empty: data_dir/actuator/state.sqlite.
    actuator_state_file: Path | None = None
    command_ttl_s: float = Field(default=600.0, gt=0, le=86_400)
    dry_run: bool = False
    simulated_plant: bool = Field(
        default=False,
        description="this deployment drives a simulated plant (the demo, a digital twin): a caller's as_of sets the decision time and the command is still sent; otherwise a decision at a caller's as_of is never sent. Refused outside loopback",
    )
    actuator_group_id: str = "actuators"
    # Serving: which registered model drives control, and how it decides.
    model_name: str = "greenhouse-forecaster"
    model_alias: str = "champion"
    interval_s: float = Field(default=300.0, gt=0, le=3600, description="control period; rate limits apply over it")
    stale_after_s: float = Field(default=900.0, gt=0, description="readings older than this: thermostat fallback")
    window_min: int = Field(default=120, ge=75, le=24 * 60, description="recent readings kept per greenhouse")
    band_low_c: float = 18.0
    band_high_c: float = 25.0
    rh_max_pct: float = Field(default=88.0, ge=0, le=100)
    margin_c: float = Field(default=0.45, ge=0, le=3, description="the MPC aims its forecasts this far above band_low_c (room for forecast error) when the model gives no interval")
    edge_margin_c: float = Field(
        default=0.1, ge=0, le=3, description="with interval forecasts (a model with air_temp_c_<h>min_low): the lower edge must stay this far above band_low_c, kelvin (it replaces margin_c)"
    )
    edge_miss_rate: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="with interval forecasts: the share of outcomes allowed below the lower edge, which is recalibrated on each greenhouse's recent closed-loop forecasts (online conformal); 0: the model's edges as they are",
    )
    edge_later_miss_rate: float = Field(
        default=0.2, gt=0, lt=1, description="the same at the horizons after the shortest: a plan the next decisions revise with fresh measurements need not hold on all days"
    )
    max_edge_margin_c: float = Field(
        default=1.5, gt=0, le=5, description="an interval edge counts at most this far from its point forecast, kelvin (a broken, very wide interval must not drive full heat)"
    )
    vent_loss_per_pct_k: float = Field(
        default=0.0005,
        ge=0,
        description="MPC cost of ventilation per vent-percent per kelvin inside above outside (the free heat it throws away; in heat-percent cost units x 0.01); 0: air exchange is free",
    )
    reversal_per_pct: float = Field(default=0.01, ge=0, description="MPC cost per percent of an actuator move against its direction of the last 15 minutes (damps oscillation); 0: none")
    screen_insulate_below_solar_w_m2: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="the MPC may keep the screen closed for insulation while the outside is cold and the sun below this, W/m2 (a light budget); 0: the screen follows its rule",
    )
    cost_horizon_max_min: int = Field(default=15, ge=1, description="forecast horizons beyond this do not enter the MPC cost (shown only)")
    cost_horizon_min_min: int = Field(
        default=10, ge=0, description="forecast horizons shorter than this do not enter the MPC cost (heating cannot move them: held to the band they make it swing); 0: all count"
    )
    offset_alpha: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="weight of the newest error in the per-horizon forecast offset (offset-free MPC); larger reacts faster but, with the delay before a forecast falls due, makes the loop oscillate",
    )
    actuator_time_constants_s: dict[str, float] = Field(
        default_factory=lambda: {"heat_pct": 300.0, "vent_pct": 120.0, "screen_pct": 180.0},
        description="first-order response time of each actuator (pipe water, vent motors, screen drive): the MPC feeds the model the mean position a setpoint leads to, as training saw it; {} treats setpoints as reached at once",
    )
    screen_opening_margin_c: float = Field(
        default=0.25, ge=0, le=3, description="extra margin while the screen opens, is about to, or opened within 15 min (pre-heat: the forecaster underestimates that cold drop)"
    )
    limits: Limits = Field(default_factory=Limits, description="safety bounds and rate limits of every setpoint")


class LoopSettings(BaseModel):
    """The control loop service: every active greenhouse decided once per ``control.interval_s``."""

    enabled: bool = Field(default=True, description="deploy the ControlLoop deployment with the control app")
    lease_s: float = Field(default=0.0, ge=0, description="a scheduler replica that has not renewed its lease for this long is gone; 0: a third of control.interval_s")
    sweep_after_s: float = Field(default=0.0, ge=0, description="after this long into an interval a replica decides every greenhouse nobody has claimed; 0: half of control.interval_s")
    batch_size: int = Field(default=256, ge=1, le=10_000, description="greenhouses decided with one forecaster call")
    poll_s: float = Field(default=0.25, gt=0, le=10, description="how often a replica looks at the clock and its claims")
    event_time: bool = Field(default=False, description="intervals follow the newest reading's time instead of the wall clock (a simulated plant); only with control.simulated_plant")


class RolloutSettings(BaseModel):
    """Defaults of a model rollout (``greenhouse rollout start``); each rollout may override them."""

    steps: list[float] = Field(default_factory=lambda: [0.1, 0.5, 1.0], description="fractions of greenhouses on the candidate, in order")
    min_errors_per_step: int = Field(default=30, ge=1, description="settled 15-min forecasts of each version needed before a step is judged")
    min_decisions_per_step: int = Field(default=12, ge=1, description="decisions on the candidate needed before a step is judged")
    error_margin_c: float = Field(default=0.15, ge=0, description="roll back when the candidate's online forecast RMSE exceeds the champion's by more than this")
    in_band_margin_pct: float = Field(default=5.0, ge=0, le=100, description="roll back when the candidate's time in band is this many points below the champion's")
    horizon_min: int = Field(default=15, ge=1, description="the forecast horizon whose online error is judged")
    settle_min: float = Field(
        default=30.0, ge=0, description="decisions in a step's first minutes do not count toward time in band (a greenhouse inherits its climate from the version that served it before)"
    )
    refresh_s: float = Field(default=2.0, gt=0, le=300, description="how often serving replicas read the active rollout")


class DriftSettings(BaseModel):
    """The drift check: recent lake partitions against the feature set's stored baseline."""

    recent_days: int = Field(default=1, ge=1, le=60, description="the newest days of the raw lake that are compared")
    psi_threshold: float = Field(default=0.25, gt=0, description="a feature whose PSI exceeds this has drifted (0.1 slight, 0.25 significant)")
    min_drifted_features: int = Field(default=2, ge=1, description="drift is reported when at least this many features drifted")
    forecast_rmse_threshold_c: float = Field(default=1.0, gt=0, description="or when the online 15-min forecast RMSE exceeds this")
    count_weather_features: bool = Field(
        default=False,
        description="count weather-driven features (outside_*, solar, wind, PAR, inside-outside difference) toward min_drifted_features; off: new weather is judged by the forecast error (a day's weather always differs from a week's)",
    )
    airflow_url: str = Field(default="", description="Airflow's API base URL for the asset event (empty: the drift DAG's task emits it)")


class ServeSettings(BaseModel):
    """Where the local Ray Serve HTTP proxy listens (plain HTTP, loopback: the TLS edge fronts it)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)


class SecuritySettings(BaseModel):
    """Credentials and TLS (README, "Security"). Secrets are files: settings hold their paths."""

    credential_cache_ttl_s: float = Field(
        default=2.0, ge=0, le=60, description="a device or operator credential is checked against the registry again after this long: revocation takes effect within it"
    )
    https_host: str = "127.0.0.1"
    https_port: int = Field(default=8443, ge=0, le=65535, description="the TLS edge (HTTPS, optional client certificates) in front of the Serve port")
    tls_cert_file: Path | None = Field(default=None, description="server certificate (PEM) of the TLS edge; empty: issued by the local CA under data_dir/pki")
    tls_key_file: Path | None = None
    ca_file: Path | None = Field(default=None, description="CA bundle clients verify servers with, and the TLS edge verifies device client certificates with; empty: the local CA")
    client_ca_file: Path | None = Field(default=None, description="CA the TLS edge verifies device client certificates with, when it is not ca_file (a device PKI of its own)")
    edge_secret_file: Path | None = Field(
        default=None,
        description="file holding the secret the TLS edge proves its client-certificate header with (the edge and the gateway share it); empty: data_dir/secrets/edge-secret, made by the edge",
    )


class RaySettings(BaseModel):
    """How jobs, the CLI and the DAG authenticate to the Ray cluster (``RAY_AUTH_MODE=token``)."""

    auth_token_file: Path | None = Field(default=None, description="file holding the cluster's token; passed to Ray as RAY_AUTH_TOKEN_PATH")
    metrics_export_port: int | None = Field(
        default=None, ge=1, le=65535, description="port of the Prometheus metrics of a Ray the demo starts (its node's metrics agent); empty: a free port, announced at start"
    )


class MonitorSettings(BaseModel):
    """The monitor process (``python -m app.entrypoints.monitor``): sink lag and job outcomes on ``/metrics``."""

    host: str = Field(default="127.0.0.1", description="address /metrics binds to (loopback: Prometheus on this machine)")
    port: int = Field(default=9108, ge=0, le=65535)
    interval_s: float = Field(default=15.0, gt=0, description="how often the figures are computed (Prometheus's scrape interval suits)")
    ray_jobs_url: str = Field(default="", description="the Ray cluster's Jobs API (dashboard) address; empty: ray_address when it is http(s)://, else http://127.0.0.1:8265")


class LogSettings(BaseModel):
    """How processes of the product log (app.log_format.setup_logging)."""

    format: Literal["auto", "json", "text"] = Field(default="auto", description="json: one JSON object per line; text: for people; auto: text on a terminal, JSON otherwise")
    level: str | None = Field(default=None, description="DEBUG, INFO, WARNING, ERROR; empty: the command's default (INFO for jobs, WARNING for the demo)")


class Settings(BaseSettings):
    """The whole configuration of the product.

    Sources, highest priority first: keyword arguments, ``GH_*`` environment variables, the YAML
    file named by ``GH_CONFIG_FILE`` (or passed to :func:`load_settings`), then defaults.
    """

    model_config = SettingsConfigDict(env_prefix="GH_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Path(".greenhouse")
    bus_url: str = ""
    lake_url: str = ""
    metadata_url: str = ""
    tracking_url: str = ""
    ray_address: str = ""
    model_cache_dir: Path | None = Field(default=None, description="node-local cache of downloaded model versions (name/version, fetched once per node); empty: data_dir/model-cache")
    topics: TopicSettings = Field(default_factory=TopicSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    prometheus_url: str = Field(default="", description="Prometheus the Ray dashboard reads its graphs from (RAY_PROMETHEUS_HOST of a Ray this product starts)")
    grafana_url: str = Field(default="", description="a Grafana the Ray dashboard embeds panels of (RAY_GRAFANA_HOST); empty: none")
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _resolve_default_urls(self) -> Settings:
        root = self.data_dir.expanduser().resolve()
        self.data_dir = root
        if not self.bus_url:
            self.bus_url = f"file://{root / 'bus'}"
        if not self.lake_url:
            self.lake_url = f"file://{root / 'lake'}"
        if not self.metadata_url:
            self.metadata_url = f"file://{root / 'metadata'}"
        if not self.tracking_url:
            self.tracking_url = f"sqlite:///{root / 'mlflow.db'}"
        return self

    @property
    def model_cache_path(self) -> Path:
        """Where this node caches registered model versions (``model_cache_dir`` or under data_dir)."""
        return (self.model_cache_dir or self.data_dir / "model-cache").expanduser()

    @property
    def secrets_dir(self) -> Path:
        """Where keys made for this machine live (mode 0700; never inside a checkout's config)."""
        return self.data_dir / "secrets"

    def for_replicas(self) -> dict[str, Any]:
        """Settings as plain data to hand to Serve replicas and jobs this process starts
        (``Settings.model_validate`` of it gives these settings back). Secrets are files, so this
        carries their paths, never their contents. A URL with a password in it is refused: Serve
        app args are visible in the dashboard and the controller's checkpoints, so such a URL must
        reach replicas through their environment (``GH_METADATA_URL`` from a secret)."""
        data = self.model_dump(mode="json")
        for key in _URL_FIELDS:
            if url_has_credentials(data[key]):
                raise ValueError(f"{key} carries credentials: pass it to replicas through their environment (GH_{key.upper()}), not in Serve app args")
        return data

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain JSON-able data with credentials inside URLs masked (for logs, summaries
        and ``greenhouse config``)."""
        data = self.model_dump(mode="json")
        for key in _URL_FIELDS:
            data[key] = mask_url_credentials(data[key])
        return data


_URL_FIELDS = ("bus_url", "lake_url", "metadata_url", "tracking_url", "ray_address")


def url_has_credentials(url: str) -> bool:
    """Whether ``url`` carries a password (``user:password@``) or a credential-like query value."""
    parts = urlsplit(url)
    password = ":" in parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else False
    return password or any(_masked_parameter(p) != p for p in parts.query.split("&") if p)


def mask_url_credentials(url: str) -> str:
    """``url`` with the password of its user-info (``scheme://user:password@host``; the user
    stays) and the values of credential-like query parameters (not ``..._file`` paths) as ``***``."""
    if not url_has_credentials(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:  # a bare user name (the WebHDFS user) is no secret
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = "&".join(_masked_parameter(p) for p in parts.query.split("&"))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _masked_parameter(parameter: str) -> str:
    name, sep, _ = parameter.partition("=")
    lowered = name.lower()
    secret = any(word in lowered for word in _SECRET_QUERY_WORDS) and not lowered.endswith(("file", "path"))
    return f"{name}=***" if secret and sep else parameter


_SECRET_QUERY_WORDS = ("password", "secret", "token", "key")


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file, the environment and explicit overrides."""
    if config_file is None:
        return Settings(**overrides)
    path = Path(config_file)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    previous = os.environ.get(CONFIG_FILE_ENV)
    # The YAML source reads the file name from the environment; restore it afterwards so that
    # loading is free of lasting side effects.
    os.environ[CONFIG_FILE_ENV] = str(path)
    try:
        return Settings(**overrides)
    finally:
        if previous is None:
            os.environ.pop(CONFIG_FILE_ENV, None)
        else:
            os.environ[CONFIG_FILE_ENV] = previous
