"""The greenhouse dashboards: fleet overview, ingest, lake and jobs, model quality, control, security.

Metric names are exactly those of the metric catalogue in docs/observability.md (the names
Prometheus stores: ``ray_`` for what Ray's metrics agent exports, ``_total`` on counters, no prefix
for the monitor process's prometheus_client metrics). Every expression aggregates Ray's and Serve's
own labels away (``sum by``/``max by`` the product's labels), as the alert rules do.
"""

from __future__ import annotations

from app.observability.dashboards.spec import DashboardSpec, PanelSpec, Query

# Windows: 5m for rates of busy counters; 1h for forecast errors, which fall due slowly (the alert
# GhForecastErrorHigh uses the same hour).
_RATE = "5m"
_ERROR_WINDOW = "1h"


def _p95(bucket: str, by: str = "") -> str:
    """The 95th percentile of a Ray histogram over 5 minutes, per ``by`` labels (Ray's ``le`` is e.g. "1.0")."""
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile(0.95, sum by ({labels}) (rate({bucket}[{_RATE}])))"


def _mean_error(selector: str, by: str) -> str:
    """Mean absolute forecast error in C over the error window (Ray's ``_sum`` is approximate)."""
    metric = "ray_gh_online_forecast_abs_error_celsius"
    return f"sum by ({by}) (rate({metric}_sum{{{selector}}}[{_ERROR_WINDOW}])) / sum by ({by}) (rate({metric}_count{{{selector}}}[{_ERROR_WINDOW}]))"


DATA_AGE = PanelSpec(
    "Data age per greenhouse",
    "Seconds since the measurement time of the newest reading accepted per greenhouse (GhGreenhouseSilent fires above 15 minutes).",
    (Query("time() - max by (greenhouse_id) (ray_gh_greenhouse_last_reading_timestamp_seconds)", "{{greenhouse_id}}"),),
    unit="s",
)
RECORDS_ACCEPTED = PanelSpec(
    "Records accepted",
    "Readings the ingest gateways accepted and wrote to the bus, per second.",
    (Query(f"sum by (application) (rate(ray_gh_ingest_records_accepted_total[{_RATE}]))", "{{application}}"),),
    unit="cps",
)
RECORDS_REJECTED = PanelSpec(
    "Records rejected by reason",
    "Readings the contract refused (they go to the dead-letter topic), per second and reason.",
    (Query(f"sum by (reason) (rate(ray_gh_ingest_records_rejected_total[{_RATE}]))", "{{reason}}"),),
    unit="cps",
    no_value="0",
)
SINK_LAG = PanelSpec(
    "Sink lag per partition",
    "Records on the bus the lake sink has not committed yet (the monitor process; GhSinkLagGrowing).",
    (Query("max by (topic, partition) (gh_sink_lag_records)", "{{topic}}/{{partition}}"),),
)
DECISIONS_BY_MODE = PanelSpec(
    "Control decisions by mode",
    "Control decisions per second: mpc (the model) or thermostat (the rule-based fallback), by source.",
    (Query(f"sum by (mode, source) (rate(ray_gh_control_decisions_total[{_RATE}]))", "{{mode}} {{source}}"),),
    unit="ops",
)
FORECAST_MAE = PanelSpec(
    "Online forecast error (MAE, 15 min)",
    "Mean absolute error of the served 15-minute indoor temperature forecasts that fell due in the last hour (GhForecastErrorHigh above 1 C).",
    (Query(_mean_error('shadow="false", horizon_min="15"', "model_version"), "{{model_version}}"),),
    unit="celsius",
)
TARGETS_UP = PanelSpec("Scrape targets up", "Scrape targets answering, per scrape job (GhTargetDown, GhRayMetricsTargetsMissing).", (Query("sum by (job) (up)", "{{job}}"),))
ALERTS_FIRING = PanelSpec(
    "Alerts firing",
    "Greenhouse alerts firing now, by name (the rules: stack/prometheus/rules/greenhouse.rules.yml).",
    (Query('count by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}"),),
    no_value="0",
)
AUTH_FAILURES = PanelSpec(
    "Authentication failures",
    "Requests refused for their credentials, per second, by surface and reason (GhAuthFailureBurst).",
    (Query(f"sum by (surface, reason) (rate(ray_gh_auth_failures_total[{_RATE}]))", "{{surface}} {{reason}}"),),
    unit="reqps",
    no_value="0",
)

FLEET_OVERVIEW = DashboardSpec(
    "gh-fleet-overview",
    "Greenhouse / Fleet overview",
    "The fleet at a glance: data flowing in, into the lake, decisions going out, model error, alerts.",
    (RECORDS_ACCEPTED, RECORDS_REJECTED, DATA_AGE, SINK_LAG, DECISIONS_BY_MODE, FORECAST_MAE, TARGETS_UP, ALERTS_FIRING),
)

INGEST = DashboardSpec(
    "gh-ingest",
    "Greenhouse / Ingest",
    "The ingest gateways (Ray Serve): requests, latency, payload size, records by outcome, freshness.",
    (
        PanelSpec(
            "Requests by API and status",
            "Produce requests per second by API version (v2, v3) and HTTP status code.",
            (Query(f"sum by (api, code) (rate(ray_gh_ingest_requests_total[{_RATE}]))", "{{api}} {{code}}"),),
            unit="reqps",
        ),
        PanelSpec(
            "Request latency p95", "95th percentile of the gateway's request duration, by API version.", (Query(_p95("ray_gh_ingest_request_duration_seconds_bucket", "api"), "{{api}}"),), unit="s"
        ),
        PanelSpec("Request body p95", "95th percentile of produce request payload sizes, by API version.", (Query(_p95("ray_gh_ingest_request_body_bytes_bucket", "api"), "{{api}}"),), unit="bytes"),
        RECORDS_ACCEPTED,
        RECORDS_REJECTED,
        PanelSpec(
            "Rejected share",
            "Share of records rejected over 10 minutes per gateway application (GhIngestRejectionRateHigh above 5%).",
            (
                Query(
                    "sum by (application) (rate(ray_gh_ingest_records_rejected_total[10m])) / (sum by (application) (rate(ray_gh_ingest_records_rejected_total[10m]))"
                    " + (sum by (application) (rate(ray_gh_ingest_records_accepted_total[10m])) or sum by (application) (rate(ray_gh_ingest_records_rejected_total[10m])) * 0))",
                    "{{application}}",
                ),
            ),
            unit="percentunit",
            no_value="0",
        ),
        PanelSpec(
            "Greenhouses reporting",
            "Greenhouses the gateways track (capped at 1,000), and how many sent a reading in the last 15 minutes.",
            (
                Query("count(max by (greenhouse_id) (ray_gh_greenhouse_last_reading_timestamp_seconds))", "tracked"),
                Query("count(time() - max by (greenhouse_id) (ray_gh_greenhouse_last_reading_timestamp_seconds) < 900)", "fresh"),
            ),
            kind="stat",
        ),
        DATA_AGE,
    ),
)

LAKE_AND_JOBS = DashboardSpec(
    "gh-lake-jobs",
    "Greenhouse / Lake and jobs",
    "The lake sink (rows, files, commit latency, lag) and the Ray jobs of the pipeline (outcomes, durations).",
    (
        PanelSpec(
            "Sink rows written", "Rows the lake sink committed to Parquet, per second and topic.", (Query(f"sum by (topic) (rate(ray_gh_sink_rows_written_total[{_RATE}]))", "{{topic}}"),), unit="cps"
        ),
        PanelSpec("Sink files written", "Lake files the sink committed, per second and topic.", (Query(f"sum by (topic) (rate(ray_gh_sink_files_written_total[{_RATE}]))", "{{topic}}"),), unit="ops"),
        PanelSpec(
            "Sink commit latency p95", "95th percentile of the time to write and commit one lake file with its metadata.", (Query(_p95("ray_gh_sink_commit_duration_seconds_bucket"), "p95"),), unit="s"
        ),
        SINK_LAG,
        PanelSpec(
            "Duplicates dropped",
            "Records the sink found already in the lake (a replay after a crash) and dropped, in the last hour.",
            (Query("sum(increase(ray_gh_sink_duplicates_dropped_total[1h]))", "dropped"),),
            no_value="0",
        ),
        PanelSpec(
            "Sink dead letters by reason",
            "Bus messages the sink could not turn into lake rows and sent to the dead-letter topic, in the last hour, by reason.",
            (Query("sum by (reason) (increase(ray_gh_sink_deadletters_total[1h]))", "{{reason}}"),),
            no_value="0",
        ),
        PanelSpec(
            "Bus records lost",
            "Offsets deleted by retention before a consumer read them, by topic, partition and action (refused, skipped).",
            (
                Query("sum by (topic, partition, action) (ray_gh_bus_offsets_lost_total)", "{{topic}}/{{partition}} {{action}}"),
                Query("sum by (topic, partition, action) (gh_bus_offsets_lost_total)", "{{topic}}/{{partition}} {{action}} (monitor)"),
            ),
            no_value="0",
        ),
        PanelSpec(
            "Job runs by outcome",
            "Terminal runs of the registered jobs the monitor saw through the Ray Jobs API.",
            (Query("sum by (job_name, outcome) (gh_job_runs_total)", "{{job_name}} {{outcome}}"),),
        ),
        PanelSpec(
            "Time since job finished",
            "Seconds since the newest run of each job finished, by outcome (GhJobFailed: a failure newer than the newest success).",
            (Query("time() - max by (job_name, outcome) (gh_job_last_finished_timestamp_seconds)", "{{job_name}} {{outcome}}"),),
            unit="s",
        ),
        PanelSpec(
            "Last job duration", "Duration of the newest run of each job, by outcome.", (Query("max by (job_name, outcome) (gh_job_last_duration_seconds)", "{{job_name}} {{outcome}}"),), unit="s"
        ),
        PanelSpec("Rows of the newest successful run", "Rows the newest successful run of each job handled, from its summary line.", (Query("max by (job_name) (gh_job_last_rows)", "{{job_name}}"),)),
        PanelSpec(
            "Monitor sources up",
            "Whether the monitor process reached each of its sources (Ray Jobs API, bus, metadata) at its last pass.",
            (Query("min by (source) (gh_monitor_source_up)", "{{source}}"),),
        ),
    ),
)

MODEL_QUALITY = DashboardSpec(
    "gh-model-quality",
    "Greenhouse / Model quality",
    "How well the served models forecast: online error per version and horizon, shadow versions, rollouts.",
    (
        PanelSpec(
            "Online forecast error (MAE) by horizon",
            "Mean absolute error of forecasts that fell due in the last hour, by model version, horizon and whether the forecast was a shadow's.",
            (Query(_mean_error("", "model_version, horizon_min, shadow"), "{{model_version}} {{horizon_min}} min shadow={{shadow}}"),),
            unit="celsius",
        ),
        FORECAST_MAE,
        PanelSpec(
            "Forecast error p90 (15 min)",
            "90th percentile of the absolute error of 15-minute forecasts over the last hour, by model version.",
            (Query(f'histogram_quantile(0.9, sum by (model_version, le) (rate(ray_gh_online_forecast_abs_error_celsius_bucket{{horizon_min="15"}}[{_ERROR_WINDOW}])))', "{{model_version}}"),),
            unit="celsius",
        ),
        PanelSpec(
            "Forecast errors measured",
            "Forecasts per second whose error was measured (they fell due and a reading came), by model version.",
            (Query(f"sum by (model_version) (rate(ray_gh_online_forecast_abs_error_celsius_count[{_ERROR_WINDOW}]))", "{{model_version}}"),),
            unit="ops",
        ),
        PanelSpec(
            "Serving share",
            "Share of greenhouses each model version serves, by role (champion, candidate, shadow).",
            (Query("max by (model_version, role) (ray_gh_serving_share)", "{{model_version}} {{role}}"),),
            unit="percentunit",
        ),
        PanelSpec(
            "Rollout forecast RMSE",
            "Online forecast RMSE of champion and candidate since the rollout step started (GhCanaryWorseThanChampion: candidate worse by 0.15 C). Only during a rollout.",
            (Query("max by (model, role, horizon_min) (ray_gh_rollout_forecast_rmse_celsius)", "{{model}} {{role}} {{horizon_min}} min"),),
            unit="celsius",
        ),
    ),
)

CONTROL = DashboardSpec(
    "gh-control",
    "Greenhouse / Control",
    "The control application: decisions, fallbacks, latency, clamped setpoints, dispatch and the actuators' answers.",
    (
        DECISIONS_BY_MODE,
        PanelSpec(
            "Thermostat share",
            "Share of decisions per source that were the thermostat fallback over 15 minutes (GhControlThermostatFallback above 10%).",
            (Query('sum by (source) (rate(ray_gh_control_decisions_total{mode="thermostat"}[15m])) / sum by (source) (rate(ray_gh_control_decisions_total[15m]))', "{{source}}"),),
            unit="percentunit",
        ),
        PanelSpec(
            "Fallbacks by reason",
            "Decisions that fell back to the thermostat, per second and reason.",
            (Query(f"sum by (reason) (rate(ray_gh_control_fallbacks_total[{_RATE}]))", "{{reason}}"),),
            unit="ops",
            no_value="0",
        ),
        PanelSpec(
            "Control request latency p95",
            "95th percentile of the control application's request duration, by route.",
            (Query(_p95("ray_gh_control_request_duration_seconds_bucket", "route"), "{{route}}"),),
            unit="s",
        ),
        PanelSpec(
            "Forecast latency p95", "95th percentile of the forecaster's batched model call.", (Query(_p95("ray_gh_forecast_duration_seconds_bucket", "application"), "{{application}}"),), unit="s"
        ),
        PanelSpec(
            "Setpoints clamped",
            "Setpoints the safety and rate limits clamped, per second and actuator.",
            (Query(f"sum by (actuator) (rate(ray_gh_control_setpoints_clamped_total[{_RATE}]))", "{{actuator}}"),),
            unit="ops",
            no_value="0",
        ),
        PanelSpec(
            "Dispatch failures",
            "Commands the control app could not put on the control topic, per second and reason.",
            (Query(f"sum by (reason) (rate(ray_gh_control_dispatch_failures_total[{_RATE}]))", "{{reason}}"),),
            unit="ops",
            no_value="0",
        ),
        PanelSpec(
            "Actuator commands",
            "Commands the greenhouse side applied or refused, per second, by outcome and reason.",
            # Counted where the actuator side runs: inside Ray (ray_ prefix) or in a plain process serving /metrics.
            (
                Query(f"sum by (outcome, reason) (rate(ray_gh_actuator_commands_total[{_RATE}]))", "{{outcome}} {{reason}}"),
                Query(f"sum by (outcome, reason) (rate(gh_actuator_commands_total[{_RATE}]))", "{{outcome}} {{reason}} (process)"),
            ),
            unit="ops",
            no_value="0",
        ),
    ),
)

SECURITY = DashboardSpec(
    "gh-security",
    "Greenhouse / Security",
    "Who knocks with bad credentials: authentication failures by surface and reason, refused requests, scrape targets.",
    (
        AUTH_FAILURES,
        PanelSpec(
            "Auth failures in 5 minutes",
            "Requests refused for their credentials in the last 5 minutes per surface (GhAuthFailureBurst above 20).",
            (Query("sum by (surface) (increase(ray_gh_auth_failures_total[5m]))", "{{surface}}"),),
            no_value="0",
        ),
        PanelSpec(
            "Ingest requests refused (401, 403)",
            "Produce requests answered 401 or 403, per second and status.",
            (Query(f'sum by (code) (rate(ray_gh_ingest_requests_total{{code=~"401|403"}}[{_RATE}]))', "{{code}}"),),
            unit="reqps",
            no_value="0",
        ),
        PanelSpec(
            "Ingest auth failures by reason",
            "Ingest credentials refused, by reason: missing, malformed, invalid token or certificate.",
            (Query('sum by (reason) (ray_gh_auth_failures_total{surface="ingest"})', "{{reason}}"),),
            no_value="0",
        ),
        TARGETS_UP,
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (FLEET_OVERVIEW, INGEST, LAKE_AND_JOBS, MODEL_QUALITY, CONTROL, SECURITY)
