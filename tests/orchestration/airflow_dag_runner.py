"""Run one DAG run with ``dag.test()``: executed by the *Airflow* venv's python (stack/airflow-env),
never imported by the product's test process (which has no Airflow).

    <airflow-venv>/bin/python tests/orchestration/airflow_dag_runner.py \
        --dag-file jobs/dags/greenhouse_pipeline.py --logical-date 2026-06-01T00:00:00+00:00 --conf '{...}'

Prints one JSON line: ``{"run_id", "state", "tasks": {task_id: state}, "xcom": {task_id: value},
"asset_events": [...], "queued": [...]}``: the asset events this run's tasks emitted (``asset``,
``source_task_id``, ``extra``) and the asset-triggered runs Airflow has queued (``asset``,
``target_dag_id``; the scheduler turns them into DAG runs). Expects AIRFLOW_HOME with a migrated
database (``airflow db migrate``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from datetime import datetime


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dag-file", required=True)
    parser.add_argument("--dag-attr", default="pipeline_dag")
    parser.add_argument("--logical-date", required=True, type=datetime.fromisoformat)
    parser.add_argument("--conf", default="{}")
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("dag_under_test", args.dag_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = getattr(module, args.dag_attr)

    # The run id derives from run_after: the same date twice is the same DAG run (ids, jobs).
    run = dag.test(run_after=args.logical_date, logical_date=args.logical_date, run_conf=json.loads(args.conf))

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    tasks: dict[str, str] = {}
    xcom: dict[str, object] = {}
    with create_session() as session:
        for ti in session.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run.run_id):
            tasks[ti.task_id] = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
        for row in session.query(XComModel).filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == run.run_id, XComModel.key == "return_value"):
            value = row.value
            if isinstance(value, (str, bytes)):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            xcom[row.task_id] = value
    state = run.state.value if hasattr(run.state, "value") else str(run.state)
    events, queued = asset_records(dag.dag_id, run.run_id)
    print(json.dumps({"run_id": run.run_id, "state": state, "tasks": tasks, "xcom": xcom, "asset_events": events, "queued": queued}, default=str))
    return 0


def asset_records(dag_id: str, run_id: str) -> tuple[list[dict], list[dict]]:
    """The asset events of run ``run_id`` of ``dag_id``, and every queued asset-triggered run."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        names = {a.id: a.name for a in session.query(AssetModel)}
        events = [
            {"asset": names.get(e.asset_id), "source_task_id": e.source_task_id, "extra": e.extra}
            for e in session.query(AssetEvent).filter(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
        ]
        queued = [{"asset": names.get(q.asset_id), "target_dag_id": q.target_dag_id} for q in session.query(AssetDagRunQueue)]
    return events, queued


if __name__ == "__main__":
    sys.exit(main())
