"""The node-local model cache: a registered version is fetched from MLflow once per node; the next
load (another replica, another actor on the node) reads it from disk. Against the local store and
the stack's MLflow server."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from app.tracking import Tracking
from app.train.model import ForecastModel, load_saved_model
from tests.helpers.engines import engine_url
from tests.train.test_model_unit import fit_local, frame


@pytest.fixture(params=["sqlite", "server"])
def tracking(request, tmp_path) -> Tracking:
    if request.param == "sqlite":
        return Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Tracking(engine_url("mlflow"))


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Every artifact download MLflow is asked for (its source URI), in order."""
    import mlflow.artifacts

    calls: list[str] = []
    real = mlflow.artifacts.download_artifacts

    def counted(*args, **kwargs):
        calls.append(str(kwargs.get("artifact_uri") or args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counted)
    return calls


def _register(tracking: Tracking, tmp_path, name: str, model: ForecastModel, df: pd.DataFrame) -> str:
    from app.tracking import log_forecast_model

    example = df[model.input_columns()].head(3).reset_index(drop=True)
    with tracking.run("model-cache", "log") as run_id:
        return log_forecast_model(
            tracking.url, run_id, model.save(tmp_path / uuid.uuid4().hex), load=load_saved_model, input_example=example, output_example=model.predict(example), registered_name=name
        )


def test_a_version_is_downloaded_once_per_node_and_aliases_resolve_first(tracking, tmp_path, downloads):
    from app.tracking import load_forecast_model
    from app.tracking.cache import version_dir

    df = frame()
    model = fit_local(df)
    name = f"cache-{uuid.uuid4().hex[:8]}"
    first = _register(tracking, tmp_path, name, model, df)
    tracking.set_alias(name, "champion", first)
    cache = tmp_path / "node-cache"

    loaded = load_forecast_model(tracking.url, f"models:/{name}/{first}", cache_dir=cache)
    assert len(downloads) == 1
    pd.testing.assert_frame_equal(loaded.predict(df), model.predict(df))
    # another replica on the node: by version, and by an alias pointing at the same version
    again = load_forecast_model(tracking.url, f"models:/{name}/{first}", cache_dir=cache)
    by_alias = load_forecast_model(tracking.url, f"models:/{name}@champion", cache_dir=cache)
    assert len(downloads) == 1
    pd.testing.assert_frame_equal(again.predict(df), model.predict(df))
    pd.testing.assert_frame_equal(by_alias.predict(df), model.predict(df))
    assert version_dir(cache, tracking.url, name, first).is_dir()
    assert [p.name for p in version_dir(cache, tracking.url, name, first).parent.iterdir()] == [first]  # no staging left behind

    # the alias moves: the new version is fetched once, the old one stays cached
    second = _register(tracking, tmp_path, name, fit_local(frame(seed=1)), df)
    tracking.set_alias(name, "champion", second)
    newer = load_forecast_model(tracking.url, f"models:/{name}@champion", cache_dir=cache)
    load_forecast_model(tracking.url, f"models:/{name}/{second}", cache_dir=cache)
    assert len(downloads) == 2
    assert not newer.predict(df).equals(loaded.predict(df))
    # without a cache every load downloads (the old behaviour)
    load_forecast_model(tracking.url, f"models:/{name}/{first}")
    assert len(downloads) == 3


def test_two_processes_fetching_the_same_version_end_with_one_copy(tmp_path):
    """The loser of the rename race drops its copy and uses the winner's."""
    from app.tracking.cache import cached_version, version_dir

    def fetch(dst, content):
        (dst / "model").mkdir()
        (dst / "model" / "MLmodel").write_text(content)
        return dst / "model"

    def download(dst):
        if not version_dir(tmp_path, "http://mlflow", "m", "1").exists():  # the other process wins meanwhile
            cached_version(tmp_path, "http://mlflow", "m", "1", lambda d: fetch(d, "winner"))
        return fetch(dst, "loser")

    local, fetched = cached_version(tmp_path, "http://mlflow", "m", "1", download)
    assert fetched and local == version_dir(tmp_path, "http://mlflow", "m", "1")
    assert (local / "MLmodel").read_text() == "winner"
    assert [p.name for p in local.parent.iterdir()] == ["1"]
    assert cached_version(tmp_path, "http://mlflow", "m", "1", download) == (local, False)
