"""The model pipeline on a local checkpoint: the same `build` that makes the default model."""
from __future__ import annotations

import json
import sys

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


def test_cuda_graph_is_checked_on_the_cpu_until_a_gpu_checks_it(tiny_model, tmp_path, capsys):
    """Without a GPU, `--cuda` still builds the fp16 CUDA graph, and its parity check runs that
    very graph on onnxruntime's CPU execution provider; the manifest says where it ran and that
    a machine with a GPU checks it there."""
    out = build(source=str(tiny_model / "hf"), name="mine", home=tmp_path, cuda=True)
    assert json.loads((out / "tandem-bundle.json").read_text())["variants"] == {"cpu": "cpu-int8", "cuda": "cuda-fp16"}
    manifest = json.loads((out / "cuda-fp16" / "tandem-model.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["device"] == "cuda"
    parity = manifest["parity"]
    from tandem_models.build import _cuda_present
    if _cuda_present():  # a machine with a GPU checks it there, with no note
        assert parity["device"] == "cuda" and "note" not in parity
    else:
        assert parity["device"] == "cpu" and "on the GPU" in parity["note"]
    assert parity["backend"] == "GenaiLM"
    assert parity["argmax_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 0.1
    assert parity["greedy_exact"] == f"{parity['prompts']}/{parity['prompts']}"
    # Checked once: a rerun on the same machine does not check it again.
    capsys.readouterr()
    build(source=str(tiny_model / "hf"), name="mine", home=tmp_path, cuda=True)
    assert "checking parity" not in capsys.readouterr().err
    # A later build of the CPU variant alone keeps the GPU one, built from the same checkpoint,
    # in the bundle (`make model-1.5b` after `make model` on a GPU machine).
    build(source=str(tiny_model / "hf"), name="mine", home=tmp_path, cuda=False)
    assert json.loads((out / "tandem-bundle.json").read_text())["variants"] == {"cpu": "cpu-int8", "cuda": "cuda-fp16"}


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


def test_a_build_that_fills_the_disk_keeps_the_model_that_serves(tiny_model, tmp_path, monkeypatch):
    """The builder dying of a full disk (ENOSPC) halfway through writing a variant: a message
    that says what to do, the variant that was there is untouched and still loads, nothing
    half-built is left where the server looks. The disk filling up is the one thing faked: a
    builder that writes part of a graph, then fails as the real one does on ENOSPC."""
    from tandem.model.loaded import load_model
    from tandem.model.loader import sha256_file

    out = build(source=str(tiny_model / "hf"), name="mine", home=tmp_path)
    before = {p.name: sha256_file(p) for p in (out / "cpu-int8").iterdir() if p.is_file() and not p.name.startswith(".")}
    full_disk = tmp_path / "full-disk-builder.py"
    full_disk.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('-o') + 1])\n"
        "(out / 'model.onnx').write_bytes(b'half a graph')\n"
        "sys.stderr.write('OSError: [Errno 28] No space left on device\\n')\n"
        "sys.exit(1)\n")
    full_disk.chmod(0o755)
    monkeypatch.setenv("TANDEM_GENAI_BUILDER_PYTHON", str(full_disk))  # the builder's own setting
    (out / "cpu-int8" / ".genai.json").unlink()  # the stamp gone: the variant must be rebuilt
    with pytest.raises(PipelineError, match="disk filled up.*nothing half-built is kept"):
        build(source=str(tiny_model / "hf"), name="mine", home=tmp_path)
    assert not list(out.glob(".tmp-*"))
    assert {p.name: sha256_file(p) for p in (out / "cpu-int8").iterdir() if p.is_file() and not p.name.startswith(".")} == before
    model = load_model(str(out), "cpu")
    assert model.lm.generate([1, 2, 3], max_new_tokens=2, stop_ids=set()).ids
