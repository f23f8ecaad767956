"""`tandem learn|versions|feedback`: the shell side of the learning loop.

    tandem learn [WORKSPACE] [--budget-minutes 10] [...]   fine-tune, evaluate, promote on a gain
    tandem versions [list]                                  the model's versions (* = served)
    tandem versions switch ID | base                        serve another version
    tandem versions rollback                                back to the previous one
    tandem feedback show | delete                           the opt-in local feedback log

`--model-path` picks the bundle, as `tandem.modelPath` does; without it, `--model-size` and
`--device` (as `tandem.modelSize` and `tandem.device`, default auto) pick the default model an
editor with those settings serves: the 1.5B where a GPU serves it, else the 0.5B.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say which model a shell command acts on, as the editor's settings do."""
    from ..settings import DEVICES, MODEL_SIZES
    p.add_argument("--model-path", default="", help="the model bundle, as tandem.modelPath (default: the "
                                                    "default model of --model-size)")
    p.add_argument("--model-size", default="auto", choices=MODEL_SIZES,
                   help="as tandem.modelSize: auto serves the 1.5B on a GPU where it is built, else the 0.5B")
    p.add_argument("--device", default="auto", choices=DEVICES, help="as tandem.device")


def model_path(a: argparse.Namespace) -> str | None:
    """The bundle the options name: what an editor with the same settings serves."""
    if a.model_path:
        return a.model_path
    from ..model.loaded import serving_path
    path, note = serving_path(None, a.device, a.model_size)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return path


def main(argv: list[str]) -> int:
    cmd, rest = argv[0], argv[1:]
    if cmd == "learn":
        try:
            from tandem_models.learn import main as learn_main
        except ImportError as e:
            print(f"tandem learn needs the model tools (torch, peft): install with `pip install -e .[models]` "
                  f"({e})", file=sys.stderr)
            return 2
        return learn_main(rest)
    from . import feedback, versions
    p = argparse.ArgumentParser(prog=f"tandem {cmd}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", default="list" if cmd == "versions" else "show")
    p.add_argument("id", nargs="?")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(rest)
    try:
        if cmd == "feedback":
            if a.action == "delete":
                print("deleted" if feedback.delete() else "nothing to delete", feedback.log_path())
                return 0
            print(json.dumps(feedback.summary(), indent=2))
            return 0
        bundle = versions.bundle_for(model_path(a))
        if a.action == "list":
            vs = versions.list_versions(bundle)
            if a.json:
                print(json.dumps(vs, indent=2))
            if not a.json:
                print(f"{bundle.name} ({bundle}):")
            for v in vs if not a.json else ():
                mark = "*" if v["active"] else " "
                why = v.get("decision") or "not promoted"
                state = "" if v["servable"] else f"  ({why if why.startswith('not promoted') else 'not promoted: ' + why})"
                print(f"{mark} {v['id']:<20} {v['label']}{state}")
            return 0
        if a.action == "switch":
            if not a.id:
                p.error("switch needs a version id (or base)")
            v = versions.switch(bundle, a.id)
        elif a.action == "rollback":
            v = versions.rollback(bundle)
        else:
            p.error(f"unknown action {a.action!r}")
        print(f"now serving {v['id']}: {v['label']} (a running server reloads it within seconds)")
        return 0
    except versions.VersionError as e:
        print(f"tandem {cmd}: {e}", file=sys.stderr)
        return 2
