from pathlib import Path

import pytest

from harness.core import config
from harness.core.errors import ConfigError


def test_without_any_config_it_gates_the_default_localization_net(tmp_path):
    loaded = config.load(invocation_dir=tmp_path)
    assert loaded.model == config.DEFAULT_MODEL
    assert [i.name for i in loaded.inputs] == ["mel_spectrogram"]
    assert loaded.outputs == ("positions", "uncertainties")
    assert loaded.sources == ("built-in defaults",)


def test_a_config_file_overrides_pyproject_and_the_command_line_overrides_both(tmp_path):
    default = f'model = "{config.DEFAULT_MODEL}"\n'
    (tmp_path / "pyproject.toml").write_text(f'[tool.onnx-gate]\n{default}exporter = "torchscript"\nopset = 17\ncheckpoint = "a.pt"\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "gate.toml").write_text(f"{default}opset = 18\n")
    loaded = config.load(invocation_dir=tmp_path, config_file=Path("sub/gate.toml"), overrides={"exporter": "dynamo"})
    assert (loaded.exporter, loaded.opset) == ("dynamo", 18)
    # Relative paths resolve against the file that wrote them.
    assert loaded.checkpoint == tmp_path / "a.pt"


def test_symbolic_dimensions_trace_at_two_and_test_sizes_besides_it(tmp_path):
    loaded = config.load(invocation_dir=tmp_path, overrides={})
    batch = loaded.dims["batch"]
    assert batch.trace == 2
    sizes = batch.sizes_besides_trace(3)
    assert len(sizes) == 3 and batch.trace not in sizes and all(batch.low <= s <= batch.high for s in sizes)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "no_colon"}, "must look like 'package.module:callable'"),
        ({"model": "pkg.mod:make"}, "needs [[inputs]]"),
        ({"tolerance": {"atoll": 1}}, "Did you mean 'atol'?"),
        ({"tolerance": {"atol": -1}}, "tolerance.atol must be a finite number >= 0"),
        ({"invariants": [{"output": "nope", "min": 0}]}, "invariants[0].output must be one of positions, uncertainties"),
        ({"bench": {"batches": [0]}}, "bench.batches must be a list of positive batch sizes"),
        ({"bench": {"significanse": 0.05}}, "Did you mean 'significance'?"),
        ({"bench": {"significance": 0.5}}, "bench.significance must lie in (0, 0.5), e.g. 0.05 for 95% intervals"),
        ({"bench": {"latency_regression_fails": "yes"}}, "bench.latency_regression_fails must be bool, got 'yes'"),
        ({"budget": {"max_latency_ms": {"tpu": {"1": 3}}}}, "device 'tpu' must be 'cpu' or 'cuda'"),
    ],
)
def test_invalid_values_are_named_with_the_fix(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as excinfo:
        config.load(invocation_dir=tmp_path, overrides=overrides)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_a_broken_toml_file_is_named(tmp_path):
    (tmp_path / "gate.toml").write_text("model = [\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        config.load(invocation_dir=tmp_path, config_file=Path("gate.toml"))


def test_the_publish_target_is_a_known_name_or_a_module_path_and_a_typo_is_answered(tmp_path):
    section = {**config.LOCALIZATION_NET_SECTION, "publish": {"target": "mlflow"}}
    assert config.parse(section, tmp_path).publish.target == "mlflow"
    assert config.parse({**section, "publish": {"target": "mypkg.gate_target"}}, tmp_path).publish.target == "mypkg.gate_target"
    assert config.parse(config.LOCALIZATION_NET_SECTION, tmp_path).publish.target == "s3+mlflow"
    with pytest.raises(ConfigError, match=r"unknown publish.target 'mlfow'. Did you mean 'mlflow'\? Valid: 's3\+mlflow', 'mlflow'"):
        config.parse({**section, "publish": {"target": "mlfow"}}, tmp_path)


def test_a_publish_target_module_without_the_interface_is_refused_in_one_line():
    from harness.core.config import PublishConfig
    from harness.publish.targets import publish_target

    assert publish_target(PublishConfig(target="mlflow")).LABELS["location"] == "artifact_uri"
    with pytest.raises(ConfigError, match=r"module 'json.decoder' lacks LABELS, publish, replace_reports"):
        publish_target(PublishConfig(target="json.decoder"))
    with pytest.raises(ConfigError, match=r"module 'nowhere.target' does not import \(ModuleNotFoundError"):
        publish_target(PublishConfig(target="nowhere.target"))
