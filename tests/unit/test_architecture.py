"""The layering the README promises: the cores do not import pygls; serving imports no torch."""
from __future__ import annotations

import subprocess
import sys

CORES = ["tandem.completion.engine", "tandem.generate.function", "tandem.generate.sandbox",
         "tandem.model.loaded", "tandem.provenance.store", "tandem.provenance.explain"]


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
