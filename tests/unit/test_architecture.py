"""The layering the README promises: the cores do not import pygls; serving imports no torch."""
from __future__ import annotations

import subprocess
import sys

CORES = ["tandem.completion.engine", "tandem.generate.function", "tandem.generate.sandbox",
         "tandem.model.loaded", "tandem.provenance.store", "tandem.provenance.explain",
         "tandem.inference", "tandem.model.openai_backend"]


def imported_after(modules: list[str]) -> set[str]:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_model_cores_do_not_import_pygls():
    assert "pygls" not in imported_after(CORES)


def test_the_serving_path_imports_no_torch_or_transformers():
    features = ["code_actions", "explain", "generate_function", "hover", "inline_completion", "lifecycle", "tracking"]
    loaded = imported_after(["tandem.server", "tandem.__main__"] + [f"tandem.features.{f}" for f in features])
    assert not loaded & {"torch", "transformers", "optimum"}


def test_only_the_backends_touch_the_runtimes():
    """The inference seam: outside tandem/model's backend modules nothing imports onnxruntime
    or onnxruntime-genai, or the backends themselves (they are reached through load_model)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "server" / "tandem"
    backends = {root / "model" / f for f in ("runtime.py", "genai.py", "loaded.py", "ortenv.py")}
    offenders = []
    for path in root.rglob("*.py"):
        if path in backends:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.split(".")[0] in ("onnxruntime", "onnxruntime_genai") or \
                        name.endswith(("model.runtime", "model.genai")) or name in ("runtime", "genai"):
                    offenders.append(f"{path.relative_to(root)}: {name}")
    assert not offenders, offenders


def test_no_http_client_is_loaded_unless_an_endpoint_is_used():
    """Privacy by construction: the HTTP client is imported only when the OpenAI-compatible
    backend is created (tandem.endpoint set), never by the server or its features."""
    features = ["code_actions", "explain", "generate_function", "hover", "inline_completion", "lifecycle", "tracking"]
    loaded = imported_after(["tandem.server", "tandem.__main__", "tandem.model.openai_backend"] +
                            [f"tandem.features.{f}" for f in features])
    assert not loaded & {"httpx", "httpcore", "requests", "urllib3", "aiohttp"}
