"""Drift job: ``python -m jobs.drift [--feature-set-id ID]``.

Reads the newest ``drift.recent_days`` of the raw lake with Ray Data, builds their features with the
feature set's own parameters, compares each feature with the feature set's stored baseline (PSI) and
adds the online 15-min forecast error; records a ``drift_reports`` document. Prints one JSON summary
line whose ``drifted`` says whether retraining is due: the drift DAG's task emits the Airflow asset
``greenhouse_feature_drift`` on it. With ``drift.airflow_url`` set, a drifted report is also posted
as an event of that asset through Airflow's REST API (``asset_event`` in the summary). The exit code
is 0 whether or not the data drifted; 1 when the check could not run.
"""

from __future__ import annotations

import os

from app.entrypoints.runtime import init_ray, job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), check for drift, print the summary; the exit code."""
    parser = job_parser("drift", __doc__.split("\n\n")[1])
    parser.add_argument("--feature-set-id", default=None, help="the feature set whose baseline is compared (default: the newest)")
    args = parser.parse_args(argv)

    def body() -> dict:
        from app.config import load_settings
        from app.orchestration.run_ids import run_ids_from_env
        from app.preprocess.drift import run_drift_check

        settings = load_settings(args.config)
        init_ray(settings.ray.auth_token_file)
        report = run_drift_check(settings, feature_set_id=args.feature_set_id, run_ids=run_ids_from_env(os.environ))
        summary = report.summary()
        if report.drifted and settings.drift.airflow_url:
            from app.orchestration.asset_events import post_asset_event

            event = post_asset_event(settings.drift.airflow_url, extra={k: summary[k] for k in ("report_id", "feature_set_id", "reason", "drifted_features")})
            summary["asset_event"] = {"id": event.get("id"), "asset_id": event.get("asset_id")}
        return summary

    return run_job("drift", body)
