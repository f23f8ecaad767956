"""Typed settings (section `tandem`) with defaults. A bad value gives a message and the default."""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

DEVICES = ("auto", "cuda", "cpu")
MODEL_SIZES = ("auto", "0.5b", "1.5b")
FUNCTION_PROMPTS = ("auto", "chat", "fim")
BACKENDS = ("local", "openai")
KEY_ENV = re.compile(r"TANDEM_[A-Z0-9_]+|OPENAI_API_KEY|VLLM_API_KEY|LLAMA_API_KEY")  # where an API key may come from
CONTEXT_SOURCES = ("imports", "similar", "path")  # tandem/context providers


@dataclass(frozen=True)
class Settings:
    enable: bool = True
    modelPath: str = ""  # empty: the default model built by `make model`
    device: str = "auto"  # auto: CUDA when a usable GPU is there, else CPU
    modelSize: str = "auto"  # default model when modelPath is empty; auto: 1.5B on a GPU when built, else 0.5B
    maxTokensSingleLine: int = 32
    maxTokensMultiLine: int = 128
    contextTokens: int = 1536  # prompt budget for the text around the cursor
    prefixShare: float = 0.7  # of that budget, the share for text before the cursor
    debounceMs: int = 150  # read by editor clients; the server cancels stale work itself
    warmAtCursor: bool = True  # prefill where the cursor rests while the user edits (features/warm.py)
    # "Generate function from docstring"
    functionCandidates: int = 0  # bodies to try at most; 0: 8 on a GPU, 4 on a CPU
    verifyExamples: bool = True  # run the docstring's examples against each candidate (sandboxed)
    verifyTimeoutMs: int = 5000  # per candidate, all its examples together
    maxTokensFunction: int = 320
    functionPrompt: str = "auto"  # auto: the chat template when the model has one, else FIM
    # `tandem.learn` (tandem/features/learn.py)
    learnBudgetMinutes: float = 10.0  # the whole run on this machine
    learnMinGain: float = 2.0  # points of held-out exact match a tuned model must gain to be served
    feedback: bool = False  # keep a local log of completions shown/accepted/dismissed/retained
    # Where the model runs: "local" (onnxruntime in this process) or "openai" (an
    # OpenAI-compatible server at `endpoint`: vLLM, llama.cpp's server). Nothing is sent
    # anywhere unless backend is "openai" and endpoint is set.
    backend: str = "local"
    endpoint: str = ""  # e.g. http://gpu-server:8000 (with or without /v1)
    apiModel: str = ""  # the served model's name; empty: the first one the server lists
    apiKeyEnv: str = "TANDEM_API_KEY"  # the environment variable holding the API key (never a setting)
    # Context from other files (tandem/context): the share of contextTokens it may take (what
    # it leaves unused goes to the current file), and which providers run.
    contextShare: float = 0.4  # by measurement: tests/benchmarks/bench_repo_context.py (README)
    contextSources: tuple = CONTEXT_SOURCES

    def restart_needed(self, other: "Settings") -> bool:
        """Settings that change the loaded model, not just one request."""
        return (self.modelPath, self.device, self.modelSize, self.backend, self.endpoint, self.apiModel,
                self.apiKeyEnv) != (other.modelPath, other.device, other.modelSize, other.backend, other.endpoint,
                                    other.apiModel, other.apiKeyEnv)


_LIMITS = {
    "maxTokensSingleLine": (1, 256),
    "maxTokensMultiLine": (1, 1024),
    "contextTokens": (64, 32768),
    "prefixShare": (0.1, 0.9),
    "debounceMs": (0, 5000),
    "functionCandidates": (0, 32),
    "verifyTimeoutMs": (200, 120000),
    "maxTokensFunction": (16, 2048),
    "learnBudgetMinutes": (0.5, 1440),
    "learnMinGain": (0, 100),
    "contextShare": (0.0, 0.8),
}
_CHOICES = {"device": DEVICES, "functionPrompt": FUNCTION_PROMPTS, "modelSize": MODEL_SIZES, "backend": BACKENDS}


def parse_settings(raw: object, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Read the `tandem` section. Returns the settings and one message per rejected value."""
    base = base or Settings()
    if raw is None:
        return base, []
    if not isinstance(raw, dict):
        return base, [f"Tandem settings must be an object, got {type(raw).__name__}; using defaults."]
    errors: list[str] = []
    values = {}
    known = {f.name: f for f in fields(Settings)}
    for key, value in raw.items():
        if key not in known or value is None:
            continue  # unknown keys belong to the editor extension (e.g. tandem.python)
        default = getattr(Settings(), key)
        problem = _check(key, value, default)
        if problem:
            errors.append(f"Setting tandem.{key} = {value!r} is invalid: {problem}. Using {default!r}.")
            continue
        if isinstance(default, tuple):
            value = tuple(dict.fromkeys(value))  # a list in JSON; duplicates dropped
        values[key] = float(value) if isinstance(default, float) else value
    return replace(base, **values), errors


def _check(key: str, value: object, default: object) -> str | None:
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return "expected a list of strings"
        bad = [v for v in value if v not in CONTEXT_SOURCES]
        return f"unknown {', '.join(map(repr, bad))}; expected some of {', '.join(CONTEXT_SOURCES)}" if bad else None
    if isinstance(default, str):
        if not isinstance(value, str):
            return "expected a string"
        if key in _CHOICES and value not in _CHOICES[key]:
            return f"expected one of {', '.join(_CHOICES[key])}"
        if key == "endpoint" and value.strip() and not value.strip().lower().startswith(("http://", "https://")):
            return "expected an http:// or https:// URL"
        if key == "apiKeyEnv" and not KEY_ENV.fullmatch(value):
            # Any other variable (AWS_SECRET_ACCESS_KEY...) would be sent to the endpoint.
            return "expected TANDEM_... or OPENAI_API_KEY, VLLM_API_KEY, LLAMA_API_KEY"
        return None
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int) and not (numeric and float(value).is_integer()):
        return "expected a whole number"
    if not numeric:
        return "expected a number"
    lo, hi = _LIMITS[key]
    return None if lo <= value <= hi else f"expected a value from {lo} to {hi}"
