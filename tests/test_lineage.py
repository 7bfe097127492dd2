"""Lineage on real stores: twin readings through the sink (lake batches with bus offsets), a feature
set, one training through Ray Train to MLflow, a real controller decision recorded and its command
dispatched; every link of ``greenhouse lineage`` is checked against the stores.

The one training is on shuffled targets (``TrainJobParams.shuffle_targets``, what rollout drills
use), so the same model also shows that option: its skill is compared with a normal fit of the
same boosters done in-process (seconds, not another Ray Train run). ``run_promotion`` with
``move_alias=False`` is judged on it too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from app.config import Settings
from tests.helpers.lake import seed_two_greenhouses

DAYS = 2
ROUNDS = 60
RUN_IDS = {"airflow_dag_id": "greenhouse", "airflow_dag_run_id": "scheduled__2026-03-12T00:00:00+00:00", "airflow_task_id": "train", "ray_submission_id": "raysubmit_lineage01"}
FS_RUN_IDS = {"airflow_dag_id": "greenhouse", "airflow_dag_run_id": "scheduled__2026-03-12T00:00:00+00:00", "airflow_task_id": "preprocess", "ray_submission_id": "raysubmit_pre01"}


@dataclass
class World:
    settings: Settings
    feature_set_id: str
    trained: Any  # TrainResult, on shuffled targets
    command_id: str
    window_batch_id: str


@pytest.fixture(scope="module")
def world(ray_local, tmp_path_factory) -> World:
    from app.preprocess import PreprocessParams, run_preprocess
    from app.train.pipeline import TrainJobParams, run_training
    from app.train.trainer import BoosterParams

    settings = Settings(data_dir=tmp_path_factory.mktemp("lineage"))
    seed_two_greenhouses(settings, DAYS)
    fs_id = run_preprocess(settings, PreprocessParams(horizons_min=(15, 60)), run_ids=FS_RUN_IDS).feature_set_id
    trained = run_training(settings, TrainJobParams(feature_set_id=fs_id, booster=BoosterParams(num_boost_round=ROUNDS), shuffle_targets=True), run_ids=RUN_IDS)
    command_id, batch_id = _decide_and_dispatch(settings, fs_id, trained)
    return World(settings, fs_id, trained, command_id, batch_id)


def _decide_and_dispatch(settings: Settings, fs_id: str, trained: Any) -> tuple[str, str]:
    """One controller decision with the registered model on a validation row, its decision record
    written and its command dispatched (signed, audited, on the control topic). The readings
    window names the newest bus offset of the lake batch holding the row's time."""
    from app.bus import open_bus
    from app.contracts.command import ModelRef
    from app.contracts.vocabulary import horizon_of
    from app.control.core import Controller, ControlPolicy, GreenhouseState, ModelForecaster
    from app.control.decision_record import DecisionContext, decision_document, policy_fingerprint
    from app.control.dispatch import CommandDispatcher
    from app.metadata import DECISIONS, LAKE_BATCHES, open_metadata
    from app.preprocess import load_feature_set
    from app.tracking import load_forecast_model

    model = load_forecast_model(settings.tracking_url, f"models:/{trained.model_name}/{trained.model_version}")
    keys = model.output_keys()

    def predict(matrix: np.ndarray, columns: list[str], horizons: Any) -> np.ndarray:
        out = model.predict_arrays(matrix, columns)
        return out if horizons is None else out[:, [i for i, k in enumerate(keys) if horizon_of(k) in horizons]]

    _, validation, _ = load_feature_set(settings, fs_id)
    row = validation.iloc[len(validation) // 3].to_dict()
    ts = pd.Timestamp(row["ts"]).to_pydatetime()
    state = GreenhouseState(str(row["greenhouse_id"]), {**row, "ts": ts})
    forecaster = ModelForecaster(ModelRef(name=trained.model_name, version=trained.model_version), tuple(model.feature_columns), tuple(model.horizons_min), tuple(keys), predict)
    controller = Controller(ControlPolicy.from_settings(settings))
    decision = controller.decide_sync(state, forecaster, ts + timedelta(seconds=30))
    assert decision.mode == "mpc", decision.reason

    store = open_metadata(settings.metadata_url)
    batch = next(d for d in store.collection(LAKE_BATCHES).find({"greenhouse_id": state.greenhouse_id}) if d["ts_min"] <= ts <= d["ts_max"])
    provenance = {"first_ts": ts - timedelta(hours=3), "last_ts": ts, "count": 180, "bus_offsets": {str(batch["partition"]): batch["offset_end"]}}
    context = DecisionContext("on_demand", "operator:lineage-test", interval_start=ts)
    record = decision_document(decision, context, features=state.features, provenance=provenance, policy=policy_fingerprint(controller.policy), band_c=(18.0, 24.0))
    store.collection(DECISIONS).insert_one(record)
    CommandDispatcher(settings, open_bus(settings.bus_url), store).dispatch(decision.command)
    return decision.command.command_id, str(batch["_id"])


# -- the chain from a command, link by link against the stores -----------------------------------


def test_command_chain_has_every_link_in_order(world):
    from app.lineage import lineage_of_command

    chain = lineage_of_command(world.settings, world.command_id)
    assert chain.kinds() == ["command", "decision", "readings", "model_version", "mlflow_run", "feature_set", "lake_batches", "bus_offsets"]
    assert chain.missing == []
    assert [link.parent for link in chain.links] == [None, "command", "decision", "decision", "model_version", "mlflow_run", "feature_set", "lake_batches"]


def test_command_and_decision_links_are_the_audit_and_the_record(world):
    from app.bus import TopicPartition, open_bus
    from app.lineage import lineage_of_command
    from app.metadata import CONTROL_AUDIT, DECISIONS, open_metadata

    store = open_metadata(world.settings.metadata_url)
    audit = store.collection(CONTROL_AUDIT).find_one({"_id": world.command_id})
    record = store.collection(DECISIONS).find_one({"_id": world.command_id})
    chain = lineage_of_command(world.settings, world.command_id)
    command, decision = chain.link("command"), chain.link("decision")
    assert command.id == decision.id == audit["command_id"] == record["command_id"] == world.command_id
    assert command.facts["status"] == "dispatched" and command.facts["topic"] == world.settings.topics.control
    assert (command.facts["partition"], command.facts["offset"], command.facts["sequence"]) == (audit["partition"], audit["offset"], audit["sequence"])
    # the offset really holds the command on the control topic
    tp = TopicPartition(world.settings.topics.control, audit["partition"])
    consumer = open_bus(world.settings.bus_url).consumer("lineage-test", [tp.topic])
    consumer.seek(tp, audit["offset"])
    (message,) = [m for m in consumer.poll(10, timeout_s=2.0) if (m.partition, m.offset) == (tp.partition, audit["offset"])]
    consumer.close()
    assert json.loads(message.value)["command_id"] == world.command_id
    for key in ("greenhouse_id", "decided_at", "requested_by", "source", "mode", "feature_row_sha256", "offset_correction_c", "policy", "setpoints", "model"):
        assert decision.facts[key] == record[key], key
    assert decision.facts["model"] == {"name": world.trained.model_name, "version": world.trained.model_version}
    assert decision.facts["policy"]["sha256"] and decision.facts["policy"]["params"]


def test_readings_link_is_the_decision_window_and_the_batch_holding_its_offset(world):
    from app.lineage import lineage_of_command
    from app.metadata import DECISIONS, LAKE_BATCHES, open_metadata

    store = open_metadata(world.settings.metadata_url)
    readings = store.collection(DECISIONS).find_one({"_id": world.command_id})["readings"]
    link = lineage_of_command(world.settings, world.command_id).link("readings")
    assert link.facts["bus_offsets"] == {p: int(o) for p, o in readings["bus_offsets"].items()}
    assert (link.facts["first_ts"], link.facts["last_ts"], link.facts["count"]) == (readings["first_ts"], readings["last_ts"], readings["count"])
    assert world.window_batch_id in link.facts["lake_batches"]
    for batch_id in link.facts["lake_batches"]:  # each holds readings of the window, up to its newest offset
        batch = store.collection(LAKE_BATCHES).find_one({"_id": batch_id})
        offset = readings["bus_offsets"][str(batch["partition"])]
        assert batch["topic"] == world.settings.topics.sensors and batch["offset_start"] <= offset
        assert batch["ts_min"] <= readings["last_ts"] and batch["ts_max"] >= readings["first_ts"]


def test_model_and_run_links_are_the_registry_version_and_its_run(world):
    from app.lineage import lineage_of_command
    from app.tracking import Tracking

    tracking = Tracking(world.settings.tracking_url)
    chain = lineage_of_command(world.settings, world.command_id)
    version, run = chain.link("model_version"), chain.link("mlflow_run")
    assert version.id == f"{world.trained.model_name}/{world.trained.model_version}"
    registered = tracking.client.get_model_version(world.trained.model_name, world.trained.model_version)
    assert version.facts["run_id"] == registered.run_id == run.id == world.trained.run_id
    stored = tracking.get_run(run.id)
    assert run.facts["params"] == stored["params"] and run.facts["metrics"] == stored["metrics"]
    assert run.facts["orchestration"] == RUN_IDS
    assert {f"lineage.{k}": v for k, v in RUN_IDS.items()}.items() <= stored["tags"].items()
    assert stored["tags"]["feature_set_id"] == world.feature_set_id


def test_feature_set_batches_and_offsets_are_the_stored_documents(world):
    from app.lineage import lineage_of_command
    from app.metadata import FEATURE_SETS, LAKE_BATCHES, open_metadata

    store = open_metadata(world.settings.metadata_url)
    fs = store.collection(FEATURE_SETS).find_one({"_id": world.feature_set_id})
    batches = store.collection(LAKE_BATCHES).find({"_id": {"$in": fs["source_batches"]}})
    chain = lineage_of_command(world.settings, world.command_id)
    fs_link, batches_link, offsets_link = chain.link("feature_set"), chain.link("lake_batches"), chain.link("bus_offsets")
    assert fs_link.id == world.feature_set_id and fs_link.facts["orchestration"] == FS_RUN_IDS
    assert _run_tag(world, "source_batch_count") == str(len(fs["source_batches"]))
    assert batches_link.facts["count"] == batches_link.facts["found"] == len(fs["source_batches"]) == len(batches) > 0
    assert sorted(batches_link.facts["ids"]) == sorted(fs["source_batches"])
    assert sorted(batches_link.facts["files"]) == sorted(d["path"] for d in batches)
    assert batches_link.facts["rows"] == sum(d["rows"] for d in batches)
    assert batches_link.facts["dates"] == {"first": min(d["date"] for d in batches), "last": max(d["date"] for d in batches)}
    expected = {}
    for d in batches:
        lo, hi = expected.get((d["topic"], d["partition"]), (d["offset_start"], d["offset_end"]))
        expected[(d["topic"], d["partition"])] = (min(lo, d["offset_start"]), max(hi, d["offset_end"]))
    assert {(p["topic"], p["partition"]): (p["offset_start"], p["offset_end"]) for p in offsets_link.facts["partitions"]} == expected


def _run_tag(world: World, tag: str) -> str:
    from app.tracking import Tracking

    return Tracking(world.settings.tracking_url).get_run(world.trained.run_id)["tags"][tag]


# -- the other entry points and the CLI ------------------------------------------------------------


def test_model_version_and_feature_set_entry_points(world):
    from app.lineage import lineage_of_command, lineage_of_feature_set, lineage_of_model_version
    from app.tracking import Tracking

    from_command = lineage_of_command(world.settings, world.command_id).to_dict()["links"]
    from_version = lineage_of_model_version(world.settings, world.trained.model_name, world.trained.model_version)
    assert from_version.kinds() == ["model_version", "mlflow_run", "feature_set", "lake_batches", "bus_offsets"]
    assert [link["facts"] for link in from_version.to_dict()["links"][1:]] == [link["facts"] for link in from_command[4:]]
    Tracking(world.settings.tracking_url).set_alias(world.trained.model_name, "lineage-test", world.trained.model_version)
    assert lineage_of_model_version(world.settings, world.trained.model_name, "@lineage-test").root_id == from_version.root_id
    from_fs = lineage_of_feature_set(world.settings, world.feature_set_id)
    assert from_fs.kinds() == ["feature_set", "lake_batches", "bus_offsets"] and from_fs.links[0].parent is None
    assert [link["facts"] for link in from_fs.to_dict()["links"]] == [link["facts"] for link in from_command[5:]]


def test_train_and_tune_jobs_take_the_run_ids_from_their_environment(monkeypatch):
    from app.entrypoints.train import orchestration_run_ids
    from app.orchestration.run_ids import lineage_env, submission_id_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    for name, value in {**lineage_env(dag_id="greenhouse", dag_run_id="manual__1", task_id="train"), **submission_id_env("raysubmit_x")}.items():
        monkeypatch.setenv(name, value)
    assert orchestration_run_ids() == {"airflow_dag_id": "greenhouse", "airflow_dag_run_id": "manual__1", "airflow_task_id": "train", "ray_submission_id": "raysubmit_x"}


def test_training_tags_name_the_feature_set_the_run_ids_and_a_degraded_model():
    from app.train.pipeline import TrainJobParams, training_tags

    doc = {"_id": "fs-1", "source_batches": ["a", "b"], "source_batch_count": 2}
    tags = training_tags(doc, TrainJobParams(shuffle_targets=True), {"airflow_dag_run_id": "manual__1", "ray_submission_id": ""}, {"tuned": "true"})
    assert tags == {"feature_set_id": "fs-1", "source_batch_count": "2", "lineage.airflow_dag_run_id": "manual__1", "degraded": "true", "tuned": "true"}
    assert "degraded" not in training_tags(doc, TrainJobParams(), None, None)


def _cli(world: World, *args: str):
    from app.cli.lineage import app

    return CliRunner().invoke(app, list(args), env={"GH_DATA_DIR": str(world.settings.data_dir)})


def test_cli_prints_the_whole_chain_as_a_tree_and_as_json(world):
    tree = _cli(world, world.command_id)
    assert tree.exit_code == 0, tree.output
    for text in (world.command_id, world.trained.run_id, world.feature_set_id, "raysubmit_lineage01", "bus offsets", world.settings.topics.sensors, "feature_row_sha256"):
        assert text in tree.output, text
    as_json = _cli(world, world.command_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout)
    assert doc["complete"] and [link["kind"] for link in doc["links"]][-1] == "bus_offsets"
    version = _cli(world, "--model-version", world.trained.model_version, "--model-name", world.trained.model_name, "--json")
    assert version.exit_code == 0 and json.loads(version.stdout)["root_id"] == f"{world.trained.model_name}/{world.trained.model_version}"
    fs = _cli(world, "--feature-set", world.feature_set_id)
    assert fs.exit_code == 0 and "lake batches" in fs.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cmd-that-never-was"], "no command 'cmd-that-never-was'"),
        (["--feature-set", "fs-nope"], "fs-nope"),
        (["--model-version", "999"], "no version 999"),
        (["--model-version", "@nobody"], "no alias 'nobody'"),
        ([], "exactly one of"),
    ],
)
def test_cli_unknown_ids_exit_2_with_a_clear_message(world, args, message):
    result = _cli(world, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


# -- a model trained on shuffled targets; promotion without moving the alias ---------------------


def _normal_fit_skill(world: World) -> float:
    """The 15-min skill of the same boosters fitted in-process on the real (unshuffled) targets."""
    import xgboost

    from app.preprocess import load_feature_set
    from app.train.evaluate import evaluate
    from app.train.model import ForecastModel
    from app.train.trainer import BoosterParams, target_specs

    train, validation, doc = load_feature_set(world.settings, world.feature_set_id)
    horizons = [int(h) for h in doc["params"]["horizons_min"]]
    booster = BoosterParams(num_boost_round=ROUNDS)
    boosters = {}
    for key, spec in target_specs(list(doc["feature_columns"]), horizons).items():  # every variable and horizon
        dtrain = xgboost.DMatrix(train[spec["features"]].astype("float64"), label=train[spec["label"]] - train[spec["base"]], feature_names=spec["features"])
        boosters[key] = xgboost.train({**booster.xgb_params(), "nthread": 2, "monotone_constraints": spec["monotone"]}, dtrain, num_boost_round=ROUNDS)
    model = ForecastModel(boosters, list(doc["feature_columns"]), horizons, feature_set_id=world.feature_set_id)
    return evaluate(model, validation)["skill_air_temp_c_15min"]


def test_shuffled_targets_give_a_useless_model_tagged_degraded(world):
    from app.tracking import Tracking

    shuffled, normal = world.trained.metrics["skill_air_temp_c_15min"], _normal_fit_skill(world)
    assert normal > 0.1 and shuffled < normal - 0.5, (normal, shuffled)
    assert world.trained.degraded
    run = Tracking(world.settings.tracking_url).get_run(world.trained.run_id)
    assert run["tags"]["degraded"] == "true" and run["params"]["shuffle_targets"] == "True"


def test_promotion_without_moving_the_alias_gives_the_same_verdict(world):
    from app.tracking import Tracking
    from app.train.promotion import run_promotion

    tracking = Tracking(world.settings.tracking_url)
    name, version = world.trained.model_name, world.trained.model_version
    assert tracking.version_by_alias(name, "challenger") == version and tracking.version_by_alias(name, "champion") is None
    verdict = run_promotion(world.settings, name, move_alias=False)
    assert verdict.promoted and verdict.passed and not verdict.alias_moved  # passed: there is no champion yet
    assert verdict.champion_version_after is None and tracking.version_by_alias(name, "champion") is None
    assert verdict.summary()["passed"] is True
    moved = run_promotion(world.settings, name)
    assert (moved.promoted, moved.alias_moved, moved.champion_version_after) == (True, True, version)
    assert tracking.version_by_alias(name, "champion") == version
    assert run_promotion(world.settings, name, move_alias=False).reason == "the challenger already is the champion"
