"""Model integrity: the build records the sha256 of every file of a variant, loading checks them
(hashing each version of a file once), and a model changed on disk is noticed cheaply."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tandem.model import loader
from tandem.model.loader import MANIFEST_NAME, ModelError, disk_fingerprint, resolve_model
from tandem_models.export import write_bundle, write_variant_manifest
from tests.corrupt import flip_byte, put_byte

FIM = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>"]


def build_variant(root: Path, name: str = "onnx-fp32") -> Path:
    """A bundle with one variant written by the pipeline's own manifest writer; the ONNX files are
    random bytes (resolving a model checks files, it does not run them)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    hf = root / "hf"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": 2048}))
    vocab = {t: i for i, t in enumerate(FIM + ["[UNK]"])}
    Tokenizer(WordLevel(vocab, unk_token="[UNK]")).save(str(hf / "tokenizer.json"))
    variant = root / name
    variant.mkdir()
    (variant / "model.onnx").write_bytes(os.urandom(64 << 10))
    (variant / "model.onnx_data").write_bytes(os.urandom(1 << 20))
    write_variant_manifest(variant, name, hf, source={"name": "test"})
    write_bundle(root, "test", {"cpu": name})
    return variant


@pytest.fixture
def model(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    build_variant(tmp_path / "model")
    return tmp_path / "model"


def test_the_build_records_size_and_sha256_of_every_file(model):
    manifest = json.loads((model / "onnx-fp32" / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.onnx_data", "tokenizer.json"}
    for name, meta in manifest["files"].items():
        data = (model / "onnx-fp32" / name).read_bytes()
        assert meta == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert resolve_model(model, "cpu").directory == model / "onnx-fp32"


@pytest.mark.parametrize("name", ["model.onnx_data", "model.onnx", "tokenizer.json"])
def test_a_byte_flipped_in_place_is_refused_with_what_to_do(model, name):
    resolve_model(model, "cpu")  # verified once: the stamp must not hide the change
    flip_byte(model / "onnx-fp32" / name)
    with pytest.raises(ModelError) as e:
        resolve_model(model, "cpu")
    msg = str(e.value)
    assert name in msg and "sha256" in msg and "make model" in msg


def test_a_flipped_byte_with_its_mtime_put_back_is_still_refused(model):
    """mtime can be set back (touch -r, rsync -t); ctime cannot."""
    path = model / "onnx-fp32" / "model.onnx_data"
    resolve_model(model, "cpu")
    st = path.stat()
    flip_byte(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(ModelError, match="sha256"):
        resolve_model(model, "cpu")


def test_a_file_restored_in_place_loads_again(model):
    path = model / "onnx-fp32" / "model.onnx_data"
    offset, old = flip_byte(path)
    with pytest.raises(ModelError):
        resolve_model(model, "cpu")
    put_byte(path, offset, old)
    assert resolve_model(model, "cpu").directory == model / "onnx-fp32"


def test_a_wrong_checksum_in_the_manifest_is_refused(model):
    mpath = model / "onnx-fp32" / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    manifest["files"]["model.onnx_data"]["sha256"] = "0" * 64
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="model.onnx_data is corrupt"):
        resolve_model(model, "cpu")


def test_a_manifest_without_checksums_is_refused(model):
    """As written before checksums existed: sizes only."""
    mpath = model / "onnx-fp32" / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    manifest["files"] = {n: {"size": m["size"]} for n, m in manifest["files"].items()}
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="no sha256 checksums.*make model"):
        resolve_model(model, "cpu")


def test_weights_the_manifest_does_not_list_are_refused(model):
    mpath = model / "onnx-fp32" / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    del manifest["files"]["model.onnx_data"]
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="no checksum for model.onnx_data"):
        resolve_model(model, "cpu")


def test_a_truncated_file_is_refused_by_its_size_before_hashing(model, monkeypatch):
    path = model / "onnx-fp32" / "model.onnx_data"
    path.write_bytes(path.read_bytes()[:1000])
    monkeypatch.setattr(loader, "sha256_file", lambda p, *a: pytest.fail(f"hashed {p}"))
    with pytest.raises(ModelError, match="wrong size"):
        resolve_model(model, "cpu")


def test_each_version_of_a_file_is_hashed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    hashed = []
    real = loader.sha256_file
    monkeypatch.setattr(loader, "sha256_file", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    build_variant(tmp_path / "model")
    assert sorted(hashed) == ["model.onnx", "model.onnx_data", "tokenizer.json"]  # by the build
    hashed.clear()
    resolve_model(tmp_path / "model", "cpu")
    assert hashed == []  # the build's stamp: the first load after a build only stats the files
    os.utime(tmp_path / "model" / "onnx-fp32" / "model.onnx")  # a new version, same bytes
    resolve_model(tmp_path / "model", "cpu")
    assert hashed == ["model.onnx"]
    hashed.clear()
    resolve_model(tmp_path / "model", "cpu")
    assert hashed == []


def test_a_copied_model_is_hashed_again(tmp_path, monkeypatch):
    """The stamp travels with a copy, but the copy's files are other inodes: it is not trusted."""
    import shutil

    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    build_variant(tmp_path / "model")
    shutil.copytree(tmp_path / "model", tmp_path / "copy")
    flip_byte(tmp_path / "copy" / "onnx-fp32" / "model.onnx_data")
    with pytest.raises(ModelError, match="sha256"):
        resolve_model(tmp_path / "copy", "cpu")


def test_the_stamp_goes_under_tandem_home_when_the_model_directory_is_not_writable(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TANDEM_HOME", str(home))
    variant = build_variant(tmp_path / "model")
    (variant / loader.VERIFIED_NAME).unlink()
    # Root writes anywhere, so make the directory unwritable the way a read-only mount would be
    # seen: the stamp's temporary file cannot be created (a directory is in its place).
    (variant / f"{loader.VERIFIED_NAME}.{os.getpid()}.tmp").mkdir()
    resolve_model(tmp_path / "model", "cpu")
    assert not (variant / loader.VERIFIED_NAME).exists()
    assert len(list((home / "verified").glob("*.json"))) == 1
    hashed = []
    monkeypatch.setattr(loader, "sha256_file", lambda p, *a: hashed.append(p))
    resolve_model(tmp_path / "model", "cpu")
    assert hashed == []


def test_the_disk_fingerprint_sees_a_same_size_change_in_place(model):
    before = disk_fingerprint(model)
    offset, old = flip_byte(model / "onnx-fp32" / "model.onnx_data")
    after = disk_fingerprint(model)
    assert after[0] == before[0] and after[1] != before[1]  # weights changed, no build finished
    put_byte(model / "onnx-fp32" / "model.onnx_data", offset, old)
    assert disk_fingerprint(model)[1] != after[1]  # restored: another change
    (model / "onnx-fp32" / MANIFEST_NAME).write_text((model / "onnx-fp32" / MANIFEST_NAME).read_text() + " ")
    assert disk_fingerprint(model)[0] != before[0]  # a build wrote a manifest
    assert disk_fingerprint(model / "missing") == ((), ())


def test_without_a_model_path_every_default_model_is_watched(tmp_path, monkeypatch):
    """Which default model serves depends on settings (model size) and on what is built: a change
    to any of them under TANDEM_HOME/models is seen."""
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    assert disk_fingerprint(None) == ((), ())
    small = build_variant(tmp_path / "home" / "models" / "small")
    before = disk_fingerprint(None)
    assert any(rel == "small/onnx-fp32/model.onnx_data" for rel, *_ in before[1])
    build_variant(tmp_path / "home" / "models" / "large")  # another default model gets built
    after = disk_fingerprint(None)
    assert after[0] != before[0]
    flip_byte(small / "model.onnx_data")
    assert disk_fingerprint(None)[1] != after[1]
