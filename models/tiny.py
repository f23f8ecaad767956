"""Build the tiny real model the test-suite serves, through the project's own pipeline.

A byte-level BPE tokenizer with Qwen's special-token names is trained on a small corpus of
ordinary Python (data/tiny_corpus.py); a randomly initialised qwen2-shaped model of about half
a million parameters is fine-tuned by finetune.py until it has memorised that corpus in
fill-in-the-middle form; export.py turns it into the same bundle layout as the real model.
So the tests run the real tokenizer, prompt, ONNX and decoding code paths, and a FIM prompt
such as prefix "def add(a, b):\\n    " completes to "return a + b".

The bundle is cached under <tandem home>/test-models/tiny-<digest>, where the digest covers
this file, the pipeline code, the corpus and the tool versions: a second call returns at
once, and any change rebuilds. Builds happen in a temporary directory renamed into place,
under a file lock, so a killed build never leaves half a model and parallel test workers
build it only once.

Usage: python -m tandem_models.tiny   (prints the bundle path)
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from tandem.completion import prompt as _prompt

from .common import BUNDLE_NAME, load_tokenizer, log, step, tandem_home
from .finetune import FinetuneConfig

NAME = "tandem-tiny-test"
HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "tiny_corpus.py"
CODE = [HERE / f for f in ("tiny.py", "finetune.py", "export.py", "common.py", "genai_build.py")]
TOOLS = ("torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "onnxruntime-genai", "tokenizers")
# What the trained checkpoint depends on (a subset): export changes reuse the trained weights.
TRAIN_CODE = [HERE / "finetune.py", Path(_prompt.__file__)]  # and the plain layout's build_fim_prompt
TRAIN_TOOLS = ("torch", "transformers", "tokenizers")

# Qwen2.5-Coder's names, so the tiny model goes through exactly the same code as the real one.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                  "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
# Qwen2's pre-tokenizer split: digits one by one, newlines kept apart from indentation.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = ("{%- for message in messages %}"
                 "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
                 "{%- endfor %}"
                 "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
VOCAB_SIZE = 2048  # an upper bound: the corpus is small, BPE runs out of merges before it
ARCH = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=384, max_position_embeddings=2048, tie_word_embeddings=False,
            rope_theta=10000.0)
SEED = 1234
# 140 s on 2 idle cores (measured; 1200 steps since the corpus grew docstring functions,
# 650 before). Measured with FIM prompts from the corpus (a function with the
# cursor at the start of each line, empty suffix or not; after each space or bracket; the
# whole file): 2 layers did as well as 4 layers or a wider model at the same cost; more steps
# and the middle weight (FIM itself is learnt slowly from plain text) helped most. Whole-file
# windows help long prompts but cost many tokens; 0.05 leaves steps for mid-line cursors.
TRAIN = FinetuneConfig(steps=1200, lr=3e-3, min_lr=3e-4, warmup=20, weight_decay=0.0,
                       batch_size=32, seq_len=512, fim_rate=0.9, whole_file_rate=0.05,
                       middle_weight=4.0, micro_tokens=4096, seed=SEED, bf16=True, log_every=50,
                       # The tests' expected outputs were written against what it learnt in this
                       # layout; trained in the serving layout it memorises its corpus otherwise
                       # (measured: 8 end-to-end tests then fail on its outputs, README "Tests").
                       layout="plain")


def build_tiny_model(home: Path | None = None) -> Path:
    """Return the tiny model's bundle directory, building it first if needed."""
    root = Path(home or tandem_home()) / "test-models"
    final = root / f"tiny-{digest()[:16]}"
    if (final / BUNDLE_NAME).exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / ".tiny.lock"):
        if (final / BUNDLE_NAME).exists():  # another process built it while we waited
            return final
        # Holding the lock, any temporary build left here belongs to a build that died.
        for stale in root.glob(".tmp-tiny-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{final.name}-{os.getpid()}"
        try:
            t0 = time.perf_counter()
            _build(tmp)
            try:
                tmp.rename(final)  # atomic: the bundle appears complete or not at all
            except OSError:  # without flock (Windows) another process may have won the race
                if not (final / BUNDLE_NAME).exists():
                    raise
            log(f"tiny model built in {time.perf_counter() - t0:.1f}s: {final}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def digest(files=None, tools=TOOLS, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for f in [*(CODE if files is None else files), CORPUS]:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for tool in tools:  # a new torch or exporter may give different weights or graphs
        try:
            h.update(f"{tool}={metadata.version(tool)}\0".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{tool}=none\0".encode())
    return h.hexdigest()


def train_digest() -> str:
    """Identity of the trained checkpoint: the training code, settings and corpus only."""
    import inspect
    # TRAIN.layout is "plain": build_fim_prompt alone (prompt.py, in TRAIN_CODE). The serving
    # layout's code (engine.serving_prompt, healing.py) is not part of it, so changing that
    # does not retrain the test model.
    assert TRAIN.layout == "plain", "a serving-layout recipe must add the engine's prompt code to the key"
    recipe = repr((SPECIAL_TOKENS, SPLIT_PATTERN, CHAT_TEMPLATE, VOCAB_SIZE, ARCH, SEED, TRAIN,
                   inspect.getsource(train_tokenizer), inspect.getsource(init_model), inspect.getsource(_train)))
    return digest(TRAIN_CODE, TRAIN_TOOLS, recipe)


@contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename alone keeps results whole
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(bundle: Path) -> None:
    from .export import _dir_digest, export_fp32, write_bundle, write_variant_manifest
    from .genai_build import build_genai

    bundle.mkdir(parents=True)
    hf_dir = bundle / "hf"
    # The trained checkpoint is kept on its own key: changing only the export reuses it.
    trained = bundle.parent / f"tiny-hf-{train_digest()[:16]}"
    if not (trained / "config.json").exists():
        tmp = bundle.parent / f".tmp-tiny-hf-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _train(tmp)
        tmp.rename(trained)
    shutil.copytree(trained, hf_dir)

    source = {"name": NAME, "kind": "tiny test model built by models/tiny.py"}
    # The served variant comes from onnxruntime-genai's builder, as for the default model;
    # cpu-fp32 (builder, float32) and onnx-fp32 (optimum-onnx, the other backend) let tests
    # compare the two runtimes on the same weights.
    digest = _dir_digest(hf_dir)
    build_genai(hf_dir, bundle / "cpu-int8", "cpu-int8", digest)
    build_genai(hf_dir, bundle / "cpu-fp32", "cpu-fp32", digest)
    export_fp32(hf_dir, bundle / "onnx-fp32")
    for name in ("cpu-int8", "cpu-fp32", "onnx-fp32"):
        write_variant_manifest(bundle / name, name, hf_dir, source=source)
    write_bundle(bundle, NAME, {"cpu": "cpu-int8"},
                 notes="tiny test model: memorises models/data/tiny_corpus.py, nothing more")


def _train(out: Path) -> None:
    from .finetune import finetune

    init_dir = out.with_name(out.name + "-init")
    shutil.rmtree(init_dir, ignore_errors=True)
    with step("training the tiny tokenizer"):
        train_tokenizer(CORPUS.read_text(), init_dir)
    with step("initialising the tiny qwen2 model"):
        init_model(init_dir)
    with step("fine-tuning the tiny model on its corpus"):
        finetune(init_dir, [CORPUS], out, TRAIN)
    shutil.rmtree(init_dir)


def train_tokenizer(corpus: str, out_dir: Path):
    """A byte-level BPE tokenizer shaped like Qwen2's, saved as a transformers tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=1, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Also every line without its indentation: a completion often starts right after the
    # indentation, and a real tokenizer has whole-word tokens for that ("return" as well as
    # " return"); without them the model must spell such words in fragments.
    dedented = "\n".join(line.strip() for line in corpus.splitlines())
    tok.train_from_iterator([corpus, dedented], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|fim_pad|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|fim_pad|>")],
        model_max_length=ARCH["max_position_embeddings"], clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    for t in SPECIAL_TOKENS:  # each must be one special id, or FIM prompts would be wrong
        if fast.encode(t, add_special_tokens=False) != [fast.convert_tokens_to_ids(t)]:
            raise RuntimeError(f"the tiny tokenizer splits {t}")
    fast.save_pretrained(out_dir)
    return fast


def init_model(model_dir: Path) -> None:
    """A randomly initialised qwen2 model sized to the tokenizer in `model_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = load_tokenizer(model_dir)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=len(tok), bos_token_id=eot, eos_token_id=eot,
                         pad_token_id=tok.pad_token_id, dtype="float32", **ARCH)
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=eot, eos_token_id=eot,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(model_dir)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tandem_models.tiny", description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, help="instead of $TANDEM_HOME / the user cache")
    args = ap.parse_args(argv)
    print(build_tiny_model(args.home))
    return 0


if __name__ == "__main__":
    sys.exit(main())
