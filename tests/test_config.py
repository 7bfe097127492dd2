"""Settings: defaults resolve under data_dir, env (GH_, __ nesting) and YAML files configure them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.config import Settings, load_settings


def test_default_urls_live_under_data_dir(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.bus_url == f"file://{tmp_path / 'bus'}"
    assert s.lake_url == f"file://{tmp_path / 'lake'}"
    assert s.metadata_url == f"file://{tmp_path / 'metadata'}"
    assert s.tracking_url == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_environment_with_nesting(monkeypatch, tmp_path):
    monkeypatch.setenv("GH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GH_BUS_URL", "kafka://127.0.0.1:9092")
    monkeypatch.setenv("GH_SINK__MAX_BATCH_RECORDS", "123")
    monkeypatch.setenv("GH_INGEST__TOPICS", '["a", "b"]')
    s = Settings()
    assert s.bus_url == "kafka://127.0.0.1:9092"
    assert s.sink.max_batch_records == 123
    assert s.ingest.topics == ["a", "b"]


def test_yaml_file_and_priority(monkeypatch, tmp_path):
    cfg = tmp_path / "gh.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "from-yaml"), "topics": {"partitions": 8}, "sink": {"group_id": "yaml-group"}}))
    monkeypatch.setenv("GH_SINK__GROUP_ID", "env-group")
    s = load_settings(cfg)
    assert s.data_dir == (tmp_path / "from-yaml").resolve()
    assert s.topics.partitions == 8
    assert s.sink.group_id == "env-group"  # the environment overrides the file
    assert load_settings(cfg, topics={"partitions": 2}).topics.partitions == 2


def test_bad_values_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, topics={"partitions": 0})
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.yaml")


def test_serve_config_validates_with_rays_schema():
    from ray.serve.schema import ServeDeploySchema

    from app.serve.args import AppArgs

    path = Path(__file__).resolve().parents[1] / "serve_configs" / "ingest.yaml"
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app_cfg,) = config.applications
    assert app_cfg.import_path == "app.serve.ingest:build_app"
    args = AppArgs.model_validate(app_cfg.args)
    assert load_settings(args.config_file, **args.settings).ingest.topics == ["greenhouse.sensors"]
    assert app_cfg.deployments[0].ray_actor_options.num_cpus < 1


def test_control_serve_config_validates_with_rays_schema():
    from ray.serve.schema import ServeDeploySchema

    from app.serve.args import AppArgs
    from app.serve.serving_models import ModelConfig

    path = Path(__file__).resolve().parents[1] / "serve_configs" / "control.yaml"
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app_cfg,) = config.applications
    assert app_cfg.import_path == "app.serve.control:build_app" and app_cfg.route_prefix == "/climate"
    AppArgs.model_validate(app_cfg.args)
    deployments = {d.name: d for d in app_cfg.deployments}
    assert set(deployments) == {"ControlApp", "ControlLoop", "Forecaster"}
    assert ModelConfig.model_validate(deployments["ControlApp"].user_config).model_alias == "champion"
    assert deployments["ControlLoop"].user_config == deployments["ControlApp"].user_config
    assert all(d.ray_actor_options.num_cpus < 1 for d in deployments.values())


def test_actuator_limits_are_settings_and_a_minimum_above_its_maximum_is_refused(monkeypatch):
    import pytest
    from pydantic import ValidationError

    monkeypatch.setenv("GH_CONTROL__LIMITS__HEAT_MAX_PCT", "80")
    assert Settings().control.limits.bounds("heat_pct") == (0.0, 80.0)
    monkeypatch.setenv("GH_CONTROL__LIMITS__HEAT_MIN_PCT", "90")
    with pytest.raises(ValidationError, match="heat_min_pct"):
        Settings()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("mongodb://gh:pw@db:27017/gh?tls=true", "mongodb://gh:***@db:27017/gh?tls=true"),
        ("webhdfs://greenhouse@127.0.0.1:9870/root", "webhdfs://greenhouse@127.0.0.1:9870/root"),
        ("kafka://k:9093?security_protocol=SASL_SSL&sasl_password_file=/run/pw", "kafka://k:9093?security_protocol=SASL_SSL&sasl_password_file=/run/pw"),
        ("https://mlflow:5000?token=abc&x=1", "https://mlflow:5000?token=***&x=1"),
        ("file:///tmp/bus", "file:///tmp/bus"),
    ],
)
def test_credentials_inside_urls_are_masked(url, masked):
    from app.config import mask_url_credentials

    assert mask_url_credentials(url) == masked


def test_replicas_never_get_a_url_with_a_password(tmp_path):
    with pytest.raises(ValueError, match="through their environment"):
        Settings(data_dir=tmp_path, metadata_url="mongodb://gh:pw@db:27017/gh").for_replicas()
    assert Settings(data_dir=tmp_path, lake_url="webhdfs://greenhouse@h:9870/x").for_replicas()["lake_url"] == "webhdfs://greenhouse@h:9870/x"
