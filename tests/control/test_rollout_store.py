"""Rollouts in the metadata store: start, tick (advance, roll back, promote), operators' promote and
abort, the step log, concurrent ticks, the promote job's --rollout, and ``greenhouse rollout``."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from app.config import RolloutSettings, Settings
from app.control.rollout import RolloutPlan
from app.control.rollout_store import RolloutStore
from app.metadata import DECISIONS, open_metadata

MODEL = "gh-forecaster"
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
GREENHOUSES = [f"gh-{i:02d}" for i in range(40)]
SETTINGS = RolloutSettings(steps=[0.25, 0.5, 1.0], min_errors_per_step=20, min_decisions_per_step=5, error_margin_c=0.15, in_band_margin_pct=5.0, settle_min=0.0)


class FakeRegistry:
    """The registry a rollout needs, in memory; ``fail`` makes set_alias raise."""

    def __init__(self, versions=("1", "2", "3", "4"), champion: str | None = "3") -> None:
        self.versions = set(versions)
        self.aliases: dict[str, str] = {"champion": champion} if champion else {}
        self.fail = False

    def version_by_alias(self, name: str, alias: str) -> str | None:
        return self.aliases.get(alias) if name == MODEL else None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        if self.fail:
            raise RuntimeError("registry unreachable")
        self.aliases[alias] = version

    def version_exists(self, name: str, version: str) -> bool:
        return name == MODEL and version in self.versions


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'metadata'}"


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def store(url: str, registry: FakeRegistry) -> RolloutStore:
    return RolloutStore(open_metadata(url), "unused", SETTINGS, registry=registry, owns_metadata=True)


def write_decisions(store: RolloutStore, plan: RolloutPlan, at: datetime, *, champion_error_c: float = 0.3, candidate_error_c: float = 0.3, candidate_in_band: bool = True) -> None:
    """One decision per greenhouse at ``at``, by the version serving it, with a settled 15-min
    error of each version (alternating sign, so each version's RMSE is its error)."""
    decisions = store.metadata.collection(DECISIONS)
    for i, greenhouse in enumerate(GREENHOUSES):
        version, role = plan.version_for(greenhouse)
        sign = 1 if i % 2 else -1
        errors = [
            {"model": MODEL, "version": plan.champion_version, "horizon_min": 15, "error_c": sign * champion_error_c, "shadow": role == "candidate"},
            {"model": MODEL, "version": plan.candidate_version, "horizon_min": 15, "error_c": sign * candidate_error_c, "shadow": role == "champion"},
        ]
        command_id = uuid.uuid4().hex
        decisions.insert_one(
            {
                "_id": command_id,
                "command_id": command_id,
                "greenhouse_id": greenhouse,
                "decided_at": at,
                "model": {"name": MODEL, "version": version},
                "role": role,
                "rollout_id": plan.rollout_id,
                "mode": "mpc",
                "in_band": candidate_in_band if role == "candidate" else True,
                "air_temp_c": 21.0,
                "settled_errors": errors,
            }
        )


def run_step(store: RolloutStore, at: datetime, **errors) -> tuple[str, RolloutPlan | None]:
    """Decisions of one control interval after ``at``, then a tick; the action and the plan after."""
    plan = store.active(MODEL)
    assert plan is not None
    write_decisions(store, plan, at + timedelta(minutes=1), **errors)
    verdict = store.tick(MODEL, at + timedelta(minutes=5))
    assert verdict is not None
    return verdict.action, store.active(MODEL)


# -- start -------------------------------------------------------------------------------------


def test_start_records_the_plan_and_its_first_step(store):
    plan = store.start(MODEL, "4", mode="canary", by="test", reason="better offline", now=T0)
    assert (plan.champion_version, plan.candidate_version, plan.steps, plan.fraction) == ("3", "4", (0.25, 0.5, 1.0), 0.25)
    assert (plan.min_errors_per_step, plan.min_decisions_per_step, plan.horizon_min) == (20, 5, 15)
    assert store.active(MODEL) == plan and store.latest(MODEL) == plan
    [doc] = store.history(plan.rollout_id)
    assert doc["event"] == "start" and doc["at"] == T0 and doc["by"] == "test" and doc["reason"] == "better offline"
    assert doc["fraction"] == 0.25 and doc["step_index"] == 0 and set(doc["figures"]) == {"champion", "candidate"}
    assert doc["recorded_at"].tzinfo is not None


def test_start_refuses_clearly(store, tmp_path):
    with pytest.raises(ValueError, match="already is the champion"):
        store.start(MODEL, "3", mode="canary", by="t")
    with pytest.raises(ValueError, match="no version '99'"):
        store.start(MODEL, "99", mode="canary", by="t")
    with pytest.raises(ValueError, match="ends at 1.0"):
        store.start(MODEL, "4", mode="canary", steps=[0.1, 0.5], by="t")
    store.start(MODEL, "4", mode="canary", by="t")
    with pytest.raises(ValueError, match="already active"):
        store.start(MODEL, "2", mode="blue_green", by="t")
    no_champion = RolloutStore(open_metadata(f"file://{tmp_path / 'other'}"), "unused", SETTINGS, registry=FakeRegistry(champion=None))
    with pytest.raises(ValueError, match="no champion"):
        no_champion.start(MODEL, "4", mode="canary", by="t")


def test_only_one_of_two_concurrent_starts_wins(url, registry):
    stores = [RolloutStore(open_metadata(url), "unused", SETTINGS, registry=registry) for _ in range(2)]
    results: list[object] = []
    barrier = threading.Barrier(2)

    def start(s: RolloutStore, version: str) -> None:
        barrier.wait()
        try:
            results.append(s.start(MODEL, version, mode="canary", by="t"))
        except ValueError as exc:
            results.append(exc)

    threads = [threading.Thread(target=start, args=(s, v)) for s, v in zip(stores, ("4", "2"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, RolloutPlan) for r in results) == 1
    assert sum(isinstance(r, ValueError) and "already active" in str(r) for r in results) == 1


# -- tick --------------------------------------------------------------------------------------


def test_a_good_candidate_advances_through_the_steps_and_is_promoted(store, registry):
    plan = store.start(MODEL, "4", mode="canary", by="test", now=T0)
    assert store.tick(MODEL, T0 + timedelta(minutes=1)).action == "hold"  # nothing settled yet
    actions, at = [], T0
    while store.active(MODEL) is not None:
        action, _ = run_step(store, at, champion_error_c=0.30, candidate_error_c=0.25)
        actions.append(action)
        at += timedelta(minutes=5)
    assert actions == ["advance", "advance", "promote"]
    assert registry.aliases == {"champion": "4", "previous-champion": "3"}
    ended = store.get(plan.rollout_id)
    assert ended.status == "promoted" and store.active(MODEL) is None and store.latest(MODEL) == ended
    history = store.history(plan.rollout_id)
    assert [d["event"] for d in history] == ["start", "advance", "advance", "promote"]
    assert [d["fraction"] for d in history] == [0.25, 0.5, 1.0, 1.0]
    assert [d["at"] for d in history] == [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10), T0 + timedelta(minutes=15)]
    assert history[-1]["figures"]["candidate"]["forecast_rmse_c"] == pytest.approx(0.25)
    assert history[-1]["by"] == "rollout-controller"
    assert store.history(MODEL) == history
    assert store.tick(MODEL, at) is None


def test_a_degraded_candidate_is_rolled_back(store, registry):
    plan = store.start(MODEL, "4", mode="canary", by="test", now=T0)
    action, after = run_step(store, T0, champion_error_c=0.30, candidate_error_c=0.60)
    assert action == "rollback" and after is None
    assert store.get(plan.rollout_id).status == "rolled_back"
    assert registry.aliases == {"champion": "3", "rejected": "4"}
    last = store.history(plan.rollout_id)[-1]
    assert last["event"] == "rollback" and last["fraction"] == 0.0 and "rmse" in last["reason"]


def test_a_candidate_that_keeps_greenhouses_out_of_band_is_rolled_back(store, registry):
    plan = store.start(MODEL, "4", mode="canary", by="test", now=T0)
    # three intervals of decisions: the hash may give the candidate fewer greenhouses than the
    # decisions a step waits for, and the verdict must not depend on the rollout id drawn
    for minute in (1, 2):
        write_decisions(store, plan, T0 + timedelta(minutes=minute), candidate_in_band=False)
    action, _ = run_step(store, T0 + timedelta(minutes=2), candidate_in_band=False)
    assert action == "rollback" and registry.aliases["champion"] == "3"


def test_blue_green_shadows_first_then_switches_everyone(store, registry):
    plan = store.start(MODEL, "4", mode="blue_green", by="test", now=T0)
    assert plan.steps == (0.0, 1.0) and all(plan.version_for(g) == ("3", "champion") for g in GREENHOUSES)
    assert run_step(store, T0)[0] == "advance"
    switched = store.active(MODEL)
    assert all(switched.version_for(g) == ("4", "candidate") for g in GREENHOUSES)
    assert run_step(store, T0 + timedelta(minutes=5))[0] == "promote"
    assert registry.aliases["champion"] == "4"


def test_shadow_holds_until_an_operator_decides(store, registry):
    store.start(MODEL, "4", mode="shadow", by="test", now=T0)
    action, plan = run_step(store, T0)
    assert action == "hold" and plan is not None and plan.revision == 0
    promoted = store.promote(MODEL, by="ann", reason="looks good", now=T0 + timedelta(hours=1))
    assert promoted.status == "promoted" and registry.aliases["champion"] == "4"
    assert [d["event"] for d in store.history(promoted.rollout_id)] == ["start", "promote"]
    assert store.history(promoted.rollout_id)[-1]["by"] == "ann"


def test_concurrent_ticks_record_exactly_one_step(url, registry):
    first = RolloutStore(open_metadata(url), "unused", SETTINGS, registry=registry)
    plan = first.start(MODEL, "4", mode="canary", by="test", now=T0)
    write_decisions(first, plan, T0 + timedelta(minutes=1))
    stores = [first] + [RolloutStore(open_metadata(url), "unused", SETTINGS, registry=registry) for _ in range(3)]
    barrier = threading.Barrier(len(stores))
    verdicts: list[str] = []

    def tick(s: RolloutStore) -> None:
        barrier.wait()
        verdicts.append(s.tick(MODEL, T0 + timedelta(minutes=5)).action)

    threads = [threading.Thread(target=tick, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts.count("advance") == 1 and verdicts.count("hold") == len(stores) - 1
    assert [d["event"] for d in first.history(plan.rollout_id)] == ["start", "advance"]
    assert first.active(MODEL).revision == 1 and first.active(MODEL).step_index == 1


def test_a_stale_plan_does_not_apply(store):
    plan = store.start(MODEL, "4", mode="canary", by="test", now=T0)
    write_decisions(store, plan, T0 + timedelta(minutes=1))
    store.abort(MODEL, by="ann", reason="stop", now=T0 + timedelta(minutes=2))
    stale = store._apply(plan, "advance", T0 + timedelta(minutes=5), "replica", "", *store.figures(plan))
    assert stale is False
    assert [d["event"] for d in store.history(plan.rollout_id)] == ["start", "abort"]


# -- operators ---------------------------------------------------------------------------------


def test_abort_leaves_the_aliases_and_ends_the_rollout(store, registry):
    plan = store.start(MODEL, "4", mode="canary", by="test", now=T0)
    aborted = store.abort(MODEL, by="ann", reason="maintenance")
    assert aborted.status == "aborted" and store.active(MODEL) is None
    assert registry.aliases == {"champion": "3"}
    assert store.history(plan.rollout_id)[-1]["reason"] == "maintenance"
    with pytest.raises(ValueError, match="no active rollout"):
        store.abort(MODEL, by="ann", reason="again")
    with pytest.raises(ValueError, match="no active rollout"):
        store.promote(MODEL, by="ann", reason="")
    assert store.start(MODEL, "4", mode="canary", by="test").status == "active"  # a new one may start


def test_a_failed_alias_move_leaves_the_rollout_active(store, registry):
    plan = store.start(MODEL, "4", mode="canary", by="test", now=T0)
    registry.fail = True
    with pytest.raises(RuntimeError, match="unreachable"):
        store.promote(MODEL, by="ann", reason="")
    still = store.active(MODEL)
    assert still is not None and still.status == "active" and still.revision == 2
    assert [d["event"] for d in store.history(plan.rollout_id)] == ["start"]
    registry.fail = False
    assert store.promote(MODEL, by="ann", reason="").status == "promoted"


# -- the real tracking (MLflow, local sqlite store) ---------------------------------------------


@pytest.fixture(scope="module")
def tracking_url(tmp_path_factory) -> str:
    from app.tracking import Tracking

    root = tmp_path_factory.mktemp("mlflow")
    url = f"sqlite:///{root / 'mlflow.db'}"
    tracking = Tracking(url)
    for i in range(2):
        with tracking.run("rollout-test", f"v{i}") as run_id:
            model = root / f"m{i}.txt"
            model.write_text(str(i))
            tracking.log_artifact(run_id, model, "model")
        tracking.register(MODEL, run_id, "model")
    tracking.set_alias(MODEL, "champion", "1")
    return url


def test_promotion_moves_the_mlflow_aliases(tracking_url, url):
    from app.tracking import Tracking

    store = RolloutStore(open_metadata(url), tracking_url, SETTINGS)
    with pytest.raises(ValueError, match="no version '7'"):
        store.start(MODEL, "7", mode="canary", by="test")
    plan = store.start(MODEL, "2", mode="canary", steps=[1.0], by="test", now=T0)
    assert plan.champion_version == "1"
    assert run_step(store, T0, champion_error_c=0.3, candidate_error_c=0.2)[0] == "promote"
    tracking = Tracking(tracking_url)
    assert tracking.version_by_alias(MODEL, "champion") == "2"
    assert tracking.version_by_alias(MODEL, "previous-champion") == "1"


# -- the promote job's --rollout ----------------------------------------------------------------


class Decision:
    def __init__(self, promoted: bool, champion: str | None) -> None:
        self.promoted, self.champion_version_before, self.challenger_version = promoted, champion, "4"
        self.reason = "challenger beats champion" if promoted else "does not beat"

    def summary(self) -> dict:
        return {"promoted": self.promoted, "challenger_version": "4", "champion_version_before": self.champion_version_before, "champion_version_after": self.champion_version_before}


def run_promote_job(monkeypatch, tmp_path, capsys, registry, decision, argv) -> dict:
    import app.train.promotion as pipeline
    from app.entrypoints.promote import main

    calls: list[dict] = []

    def fake_promotion(settings, model_name, **kwargs):
        calls.append(kwargs)
        return decision

    monkeypatch.setattr(pipeline, "run_promotion", fake_promotion)
    original = RolloutStore.from_settings.__func__
    monkeypatch.setattr(RolloutStore, "from_settings", classmethod(lambda cls, settings: original(cls, settings, registry=registry)))
    monkeypatch.setenv("GH_DATA_DIR", str(tmp_path / "gh"))
    monkeypatch.setenv("GH_CONTROL__MODEL_NAME", MODEL)
    assert main(argv) == 0
    assert calls[-1].get("move_alias") is (False if "--rollout" in argv else None)
    return orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_promote_job_starts_a_canary_rollout_of_a_passing_challenger(monkeypatch, tmp_path, capsys, registry):
    summary = run_promote_job(monkeypatch, tmp_path, capsys, registry, Decision(True, "3"), ["--rollout", "--steps", "0.5,1"])
    assert summary["ok"] and summary["rollout_id"].startswith("ro-") and summary["rollout_steps"] == [0.5, 1.0]
    assert registry.aliases == {"champion": "3"}  # the rollout moves it later
    store = RolloutStore(open_metadata(Settings(data_dir=tmp_path / "gh").metadata_url), "unused", SETTINGS, registry=registry)
    assert store.active(MODEL).rollout_id == summary["rollout_id"]


def test_promote_job_without_a_champion_promotes_directly(monkeypatch, tmp_path, capsys):
    registry = FakeRegistry(champion=None)
    summary = run_promote_job(monkeypatch, tmp_path, capsys, registry, Decision(True, None), ["--rollout"])
    assert summary["rollout_id"] is None and registry.aliases == {"champion": "4"} and summary["champion_version_after"] == "4"


def test_promote_job_with_a_failing_challenger_starts_nothing(monkeypatch, tmp_path, capsys, registry):
    summary = run_promote_job(monkeypatch, tmp_path, capsys, registry, Decision(False, "3"), ["--rollout"])
    assert summary["rollout_id"] is None and summary["promoted"] is False
    summary = run_promote_job(monkeypatch, tmp_path, capsys, registry, Decision(False, "3"), [])
    assert "rollout_id" not in summary


# -- greenhouse rollout --------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, tmp_path, registry):
    import app.cli.rollout as rollout_cli

    monkeypatch.setenv("GH_DATA_DIR", str(tmp_path / "gh"))
    monkeypatch.setenv("GH_CONTROL__MODEL_NAME", MODEL)
    monkeypatch.setattr(rollout_cli, "open_store", lambda settings: RolloutStore.from_settings(settings, registry=registry))
    runner = CliRunner()
    return lambda *args: runner.invoke(rollout_cli.app, list(args))


def test_cli_start_status_promote(cli, registry):
    started = cli("start", "--candidate", "4", "--steps", "0.2,1", "--reason", "nightly", "--by", "ann")
    assert started.exit_code == 0, started.output
    rollout_id = started.stdout.strip().splitlines()[0]
    assert rollout_id.startswith("ro-")
    status = cli("status", "--json")
    assert status.exit_code == 0
    body = json.loads(status.stdout)
    assert body["rollout"]["rollout_id"] == rollout_id and body["fraction"] == 0.2 and body["next"]["action"] == "hold"
    assert [d["event"] for d in body["history"]] == ["start"] and body["history"][0]["by"] == "ann"
    table = cli("status")
    assert table.exit_code == 0 and "step log" in table.output and rollout_id in table.output
    promoted = cli("promote", "--reason", "ship it")
    assert promoted.exit_code == 0 and registry.aliases["champion"] == "4"
    assert json.loads(cli("status", "--json").stdout)["rollout"]["status"] == "promoted"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start", "--candidate", "99"], "no version '99'"),
        (["start", "--candidate", "3"], "already is the champion"),
        (["start", "--candidate", "4", "--blue-green", "--shadow-only"], "one of --blue-green and --shadow-only"),
        (["start", "--candidate", "4", "--steps", "half,1"], "--steps takes fractions"),
        (["start", "--candidate", "4", "--steps", "0.5"], "ends at 1.0"),
        (["start", "--candidate", "4", "--blue-green", "--steps", "0.5,1"], "fixed steps"),
        (["start", "--candidate", "4", "--config", "/nonexistent.yaml"], "config file not found"),
        (["promote", "--reason", "x"], "no active rollout"),
        (["abort", "--reason", "x"], "no active rollout"),
        (["status"], "no rollout"),
    ],
)
def test_cli_refuses_bad_input_with_a_message_and_exit_2(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_cli_refuses_a_second_active_rollout_and_aborts(cli, registry):
    assert cli("start", "--candidate", "4", "--shadow-only").exit_code == 0
    again = cli("start", "--candidate", "2")
    assert again.exit_code == 2 and "already active" in again.output
    aborted = cli("abort", "--reason", "enough")
    assert aborted.exit_code == 0 and "aborted" in aborted.output and registry.aliases == {"champion": "3"}


def test_cli_help_explains_the_modes(cli):
    result = cli("--help")
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and all(word in text for word in ("canary", "blue-green", "shadow"))


def test_time_in_band_counts_only_after_the_step_settled(tmp_path):
    """A greenhouse handed to the candidate carries the climate the previous version left: the
    first ``settle_min`` of a step judge forecasts only, not time in band."""
    from app.config import RolloutSettings

    settled = RolloutStore(open_metadata(f"file://{tmp_path}/meta"), "unused", RolloutSettings(**{**SETTINGS.model_dump(), "settle_min": 30.0}), registry=FakeRegistry())
    plan = settled.start(MODEL, "4", mode="canary", steps=(1.0,), by="t", now=T0)
    for minute in range(0, 30, 5):  # out of band while settling
        write_decisions(settled, plan, T0 + timedelta(minutes=minute), candidate_in_band=False)
    champion, candidate = settled.figures(plan, T0 + timedelta(minutes=29))
    assert candidate.decisions == 0 and candidate.errors_n > 0
    for minute in range(30, 60, 5):
        write_decisions(settled, plan, T0 + timedelta(minutes=minute))
    _, candidate = settled.figures(plan, T0 + timedelta(minutes=60))
    assert candidate.decisions > 0 and candidate.in_band_pct == 100.0
