"""The model pipeline on a local checkpoint: the same `build` that makes the default model."""
from __future__ import annotations

import json

import pytest

from tandem_models.build import build, main
from tandem_models.common import PipelineError


def test_local_checkpoint_goes_through_the_pipeline(tiny_model, tmp_path, capsys):
    out = build(source=str(tiny_model / "hf"), name="mine", home=tmp_path)
    bundle = json.loads((out / "tandem-bundle.json").read_text())
    assert bundle["variants"] == {"cpu": "cpu-int8"}
    # The serving graph comes from onnxruntime-genai's builder, with its runtime config.
    assert (out / "cpu-int8" / "genai_config.json").exists()
    manifest = json.loads((out / "cpu-int8" / "tandem-model.json").read_text())
    assert manifest["source"]["kind"] == "local Hugging Face checkpoint"
    assert manifest["architecture"]["model_type"] == "qwen2"
    assert manifest["tokenizer"]["fim_ids"] and manifest["tokenizer"]["stop_ids"]
    assert manifest["tools"]["onnxruntime"]
    parity = manifest["parity"]
    assert parity["backend"] == "GenaiLM" and parity["logit_positions"] == "last"
    assert parity["argmax_agreement"] > 0.9

    # A rerun with nothing changed does nothing: every step reports it is up to date.
    capsys.readouterr()
    mtimes = {p: p.stat().st_mtime for p in out.rglob("model.onnx")}
    build(source=str(tiny_model / "hf"), name="mine", home=tmp_path)
    err = capsys.readouterr().err
    assert "cpu-int8 up to date" in err
    assert "checking parity" not in err
    assert {p: p.stat().st_mtime for p in out.rglob("model.onnx")} == mtimes


def test_optimum_engine_stays_for_other_architectures(tiny_model, tmp_path):
    out = build(source=str(tiny_model / "hf"), name="mine", home=tmp_path, engine="optimum", cpu_variant="onnx-fp32")
    assert json.loads((out / "tandem-bundle.json").read_text())["variants"] == {"cpu": "onnx-fp32"}
    fp32 = json.loads((out / "onnx-fp32" / "tandem-model.json").read_text())["parity"]
    assert fp32["backend"] == "CausalLM" and fp32["logit_positions"] == "all"
    assert fp32["max_abs_logit_diff"] < 1e-3 and fp32["greedy_exact"] == f"{fp32['prompts']}/{fp32['prompts']}"


def test_gpu_only_build_needs_a_gpu_variant(tiny_model, tmp_path):
    with pytest.raises(PipelineError, match="needs --cuda"):
        build(source=str(tiny_model / "hf"), name="mine", home=tmp_path, cpu_variant="none", cuda=False)


def test_bad_source_is_refused_with_a_message(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(PipelineError, match="neither a .gguf file nor a checkpoint"):
        build(source=str(tmp_path / "notes.txt"), home=tmp_path)
    assert main(["build", "--source", str(tmp_path / "notes.txt"), "--home", str(tmp_path)]) == 1
    assert "error:" in capsys.readouterr().err


def test_corrupt_gguf_is_refused(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(PipelineError, match="could not read"):
        build(source=str(bad), home=tmp_path / "home")
