"""The project's own pyproject.toml is a config like any user's: `make gate` runs on it."""

from pathlib import Path

from harness.core import config

ROOT = Path(__file__).resolve().parent.parent


def test_the_projects_own_config_loads_and_names_the_default_model():
    loaded = config.load(invocation_dir=ROOT)
    assert loaded.model == config.DEFAULT_MODEL
    assert loaded.sources == ("pyproject.toml [tool.onnx-gate]",)
    assert set(loaded.bench.batches) <= set(range(loaded.dims["batch"].low, loaded.dims["batch"].high + 1))


def test_default_benchmark_batches_stay_inside_the_declared_batch_range(tmp_path):
    (tmp_path / "gate.toml").write_text(
        'model = "m:f"\noutputs = ["y"]\n[[inputs]]\nname = "x"\nshape = ["batch", 4]\ndims = { batch = [1, 8] }\n'
    )
    loaded = config.load(invocation_dir=tmp_path, config_file=Path("gate.toml"))
    assert loaded.bench.batches == (1, 8)


def test_the_documented_example_config_is_valid(tmp_path):
    text = (ROOT / "docs" / "configuration.md").read_text()
    example = text.split("```toml\n[tool.onnx-gate]\nmodel = \"mypkg.nets:build_model\"", 1)[1].split("```", 1)[0]
    (tmp_path / "pyproject.toml").write_text('[tool.onnx-gate]\nmodel = "mypkg.nets:build_model"' + example)
    loaded = config.load(invocation_dir=tmp_path)
    assert loaded.model == "mypkg.nets:build_model" and loaded.bench.batches == (1, 8)


def test_the_documented_text_and_audio_input_examples_are_valid(tmp_path):
    import numpy as np

    text = (ROOT / "docs" / "inputs.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:]]
    decoder = next(b for b in blocks if "mypkg.lm:build_decoder" in b)
    audio = next(b for b in blocks if "mypkg.asr:build_encoder" in b)
    (tmp_path / "samples").mkdir()
    np.savez(tmp_path / "samples" / "one.npz", features=np.zeros((2, 50, 80), np.float32), lengths=np.array([50, 20]))
    for example in (decoder, audio):
        (tmp_path / "gate.toml").write_text(example)
        loaded = config.load(invocation_dir=tmp_path, config_file=Path("gate.toml"))
        assert loaded.padded_outputs and loaded.padding
