"""Import onnxruntime with its telemetry switched off, before the runtime can start it.

onnxruntime 1.29+ on Linux (PyPI wheels, CPU and GPU builds from the same source) creates its
environment when the module is imported, and with it a 1DS telemetry uploader: it writes a device
id and an event queue under ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ (or
$XDG_CACHE_HOME/Microsoft/...) and, about 10 s later and then with back-off, resolves
mobile.events.data.microsoft.com to upload a "ProcessInfo" event. `disable_telemetry_events()`
only mutes later events, after that has begun. The environment variable
ORT_DISABLE_TELEMETRY=1 (read once, when the runtime initialises) stops all of it: no uploader,
no files, no DNS query. So it must be set before the first `import onnxruntime` anywhere in the
process (onnxruntime_genai loads the same library and is covered the same way).

Measured (strace, and tests/e2e/test_privacy.py, which runs the server in its own network
namespace and records every DNS query and IP packet attempt): onnxruntime 1.32.0 CPU, 1.31.1 GPU
and onnxruntime-genai 0.18.0 without the variable: A and AAAA queries for that name from about
10 s after start, repeated with back-off, and a device id and onnxruntime.db written; with
ORT_DISABLE_TELEMETRY=1 (or "true"; "0" does not disable) none of it. onnxruntime 1.28.0 has no
uploader at all, but a pin below 1.29 is not an option: onnxruntime-genai 0.18 needs
onnxruntime>=1.31 (its CUDA build onnxruntime-gpu>=1.31). The runtime also stays quiet by itself
when it sees CI variables (CI, GITHUB_ACTIONS), which would hide the problem in CI runs: the
privacy test gives the server an environment without them.
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

TELEMETRY_ENV = {"ORT_DISABLE_TELEMETRY": "1"}


def disable_telemetry() -> bool:
    """Set the opt-out in this process's environment (children inherit it). Returns False when
    onnxruntime was already imported without it: then the runtime has already started its
    uploader and nothing can stop it in this process."""
    early = "onnxruntime" not in sys.modules or all(
        os.environ.get(k) == v for k, v in TELEMETRY_ENV.items())
    # Forced, not defaulted: a user's ORT_DISABLE_TELEMETRY=0 would turn the uploader back on,
    # and Tandem promises that nothing leaves the machine.
    os.environ.update(TELEMETRY_ENV)
    return early


def import_onnxruntime():
    """`import onnxruntime`, with telemetry disabled first. Every import of onnxruntime in the
    server goes through here."""
    if not disable_telemetry():
        log.warning("onnxruntime was imported before its telemetry was disabled; it may try to "
                    "reach mobile.events.data.microsoft.com (import it through tandem.model.ortenv)")
    import onnxruntime

    return onnxruntime


def import_onnxruntime_genai():
    """`import onnxruntime_genai`, with telemetry disabled first: creating an `og.Model` starts
    the same uploader (measured: DNS lookups and ~/.cache/Microsoft files without the switch)."""
    if not disable_telemetry():
        log.warning("onnxruntime was imported before its telemetry was disabled; it may try to "
                    "reach mobile.events.data.microsoft.com (import it through tandem.model.ortenv)")
    import onnxruntime_genai

    return onnxruntime_genai
