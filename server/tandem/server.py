"""The Tandem language server: state, model lifecycle and wiring of the features.

Handlers stay thin: each feature lives in tandem/features/, the model work in
tandem/completion and tandem/model (which never import pygls).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from dataclasses import dataclass, asdict

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from . import __version__
from .completion.engine import CompletionEngine
from .completion.healing import vocab_table
from .context import ContextService
from .features.warm import Warmer
from .inference import InferenceService, Priority
from .model.backend import BackendError
from .model.loaded import LoadedModel, load_model
from .model.loader import ModelError, disk_fingerprint
from .model.openai_backend import load_remote
from .protocol import TandemProtocol, report_server_error
from .provenance.explain import Explainer
from .provenance.store import ProvenanceStore
from .settings import Settings, parse_settings
from .text import UTF16

log = logging.getLogger(__name__)

HOT_RELOAD_CHECK_S = 5.0


@dataclass
class Status:
    state: str = "loading"  # loading | ready | error | disabled
    message: str = "Starting"
    model: str | None = None
    device: str | None = None
    lastLatencyMs: float | None = None


class TandemServer(LanguageServer):
    def __init__(self):
        super().__init__("tandem", __version__, protocol_cls=TandemProtocol)  # see protocol.py
        self.settings = Settings()
        self.init_settings: object = None  # initializationOptions, read at `initialized`
        self.loop: asyncio.AbstractEventLoop | None = None  # set when `initialize` arrives
        self.model: LoadedModel | None = None
        self.engine: CompletionEngine | None = None
        self.status = Status()
        # One inference service: a priority queue (load, completion, docstring candidates,
        # explanations) feeding one thread; it owns preemption and cancellation (inference.py).
        self.inference = InferenceService()
        self.inflight: dict[str, threading.Event] = {}  # uri -> cancel flag of its running request
        self.last_completion: dict | None = None  # its prompt, reused and generated tokens (tandem.status)
        self._load_task: asyncio.Task | None = None
        self._told_not_ready = False
        self._model_stamp: tuple | None = None  # the model on disk when the last load began
        self._last_stamp_check = 0.0
        self._warned: set[str] = set()
        # What Tandem wrote into documents (hover explanations); bound to the workspace's state
        # file at the first didOpen. Explanations decode on the same inference thread.
        self.provenance = ProvenanceStore()
        self.explainer = Explainer(lambda: self.model, self.inference)
        # Other files' definitions and similar code for prompts (tandem/context); the index of
        # the workspace starts at the first didOpen.
        self.context = ContextService()
        # The prompt where the cursor rests, computed before the first keystroke there.
        self.warmer = Warmer(self)

    def report_server_error(self, error: Exception, source) -> None:
        report_server_error(self, error, source)  # logged, not an "Error in server" pop-up

    @property
    def encoding(self) -> str:
        """The position encoding negotiated at `initialize` (Neovim counts UTF-8, VS Code UTF-16)."""
        return str(self.workspace.position_encoding or UTF16)

    # -- status --------------------------------------------------------------------------
    def set_status(self, **changes) -> None:
        for k, v in changes.items():
            setattr(self.status, k, v)
        self.protocol.notify("tandem/status", asdict(self.status))

    def tell(self, message: str, kind=types.MessageType.Info) -> None:
        """A pop-up: only for what the user can act on."""
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"Tandem: {message}"))

    # -- settings --------------------------------------------------------------------------
    def apply_settings(self, raw: object) -> None:
        new, errors = parse_settings(raw, Settings())
        for e in errors:
            log.warning(e)
            if e not in self._warned:  # once per bad value, not on every configuration pull
                self._warned.add(e)
                self.tell(e, types.MessageType.Warning)
        old, self.settings = self.settings, new
        if not new.enable:
            self.set_status(state="disabled", message="Disabled by the tandem.enable setting")
        elif self.status.state == "disabled":
            self.set_status(state="ready" if self.model else "loading",
                            message="Ready" if self.model else "Loading the model")
        loading = self._load_task is not None and not self._load_task.done()
        if new.restart_needed(old) or (self.model is None and not loading):
            self.start_loading()  # also retries a load that failed, once settings change

    async def pull_settings(self) -> None:
        caps = self.client_capabilities.workspace
        if not (caps and caps.configuration):
            return
        try:
            result = await asyncio.wait_for(self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section="tandem")])), 10)
        except Exception as e:  # an editor that cannot answer keeps the settings we have
            log.warning("could not read settings from the editor: %s", e)
            return
        if result and result[0] is not None:
            self.apply_settings(result[0])

    # -- model lifecycle ------------------------------------------------------------------
    def start_loading(self, device: str | None = None, reason: str | None = None) -> None:
        if self._load_task and not self._load_task.done():
            self._load_task.cancel()
        self._load_task = asyncio.get_running_loop().create_task(self._load(device, reason))

    async def _load(self, device: str | None, reason: str | None) -> None:
        settings = self.settings
        device = device or settings.device
        self._model_stamp = _stamp(settings.modelPath)  # before loading: a change during it counts
        token = str(uuid.uuid4())
        self.set_status(state="loading", message=reason or "Loading the model", device=None)
        progress = await self._progress_begin(token, "Tandem: loading the model")
        try:
            if settings.backend == "openai":
                # An OpenAI-compatible server generates; the local bundle gives the tokenizer.
                # The key comes from the environment (the VS Code extension puts its stored
                # secret there when it starts the server): never a setting, never logged.
                key = os.environ.get(settings.apiKeyEnv) or None
                model = await self.inference.run(Priority.LOAD, load_remote, settings.modelPath or None,
                                                 settings.modelSize, settings.endpoint, settings.apiModel, key,
                                                 name="load")
            else:
                model = await self.inference.run(Priority.LOAD, load_model, settings.modelPath or None, device,
                                                 settings.modelSize, name="load")
            # Token healing's table of the vocabulary (about 0.5 s for Qwen's): built while
            # loading, so the first completion does not wait for it (measured on an H200: the
            # first request took 0.5-1 s more without this).
            await self.inference.run(Priority.LOAD, vocab_table, model.codec, name="vocab-table")
        except ModelError as e:
            self.model, self.engine = None, None
            log.error("%s", e)
            self.set_status(state="error", message=str(e), model=None, device=None)
            self.tell(str(e), types.MessageType.Error)
            return
        except Exception as e:  # anything else is a bug, but the server must keep serving
            log.exception("loading the model failed")
            self.set_status(state="error", message=f"Loading the model failed: {e}")
            self.tell(f"Loading the model failed: {e}", types.MessageType.Error)
            return
        finally:
            self._told_not_ready = False  # the next load may say "still loading" once again
            if progress:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message="done"))
        self.model, self.engine = model, CompletionEngine(model)
        if not settings.modelPath and (root := self.model_root()) is not None:
            # The default model of `modelSize` (e.g. the 1.5B): watch the bundle that serves.
            self._model_stamp = _stamp(root)
        if model.note:
            log.warning(model.note)
            self.tell(model.note, types.MessageType.Warning)
        log.info("model ready: %s on %s", model.label, model.device)
        self.set_status(state="ready" if settings.enable else "disabled",
                        message=f"{model.label} on {model.device}", model=model.label, device=model.device)

    async def _progress_begin(self, token: str, title: str, cancellable: bool = False) -> bool:
        caps = self.client_capabilities.window
        if not (caps and caps.work_done_progress):
            return False
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), 5)
        except Exception:
            return False
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=cancellable))
        return True

    def ready_engine(self) -> CompletionEngine | None:
        """The engine, or None after telling the user once why there is none yet."""
        if self.engine is not None:
            self._maybe_hot_reload()
            return self.engine
        if self.status.state == "error":
            self._maybe_hot_reload()  # a model restored, repaired or built in place loads again
        if not self._told_not_ready and self.status.state == "loading":
            self._told_not_ready = True
            self.tell("the model is still loading; completions start as soon as it is ready.")
        return None

    def _maybe_hot_reload(self) -> None:
        """A rebuilt or fine-tuned model in the same place is picked up without a restart: while
        serving, once a build has written its manifests; after a failed load, as soon as any file
        of the model changed (restored, repaired or rebuilt in place)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_stamp_check < HOT_RELOAD_CHECK_S or (self._load_task and not self._load_task.done()):
            return
        self._last_stamp_check = now
        stamp, old = _stamp(self.model_root()), self._model_stamp
        changed = stamp != old if self.model is None else old is None or stamp[0] != old[0]
        if changed:
            log.info("the model on disk changed; reloading it")
            self.start_loading(reason="The model on disk changed; reloading")

    def model_root(self) -> str | None:
        """The model path that serves: the setting, or for the default model the bundle loaded
        for `modelSize` on this device (not always the 0.5B); None: the default 0.5B's."""
        if self.settings.modelPath:
            return self.settings.modelPath
        if self.model is not None and self.model.device != "remote" and self.model.bundle is not None:
            return str(self.model.bundle)
        return None

    def on_inference_ok(self) -> None:
        """A request reached the model: after an endpoint outage the status is ready again."""
        if self.status.state == "error" and self.model is not None and self.model.device == "remote":
            log.info("the inference endpoint answers again")
            self.set_status(state="ready" if self.settings.enable else "disabled",
                            message=f"{self.model.label} on {self.model.device}")

    def on_inference_error(self, error: Exception) -> None:
        """A failure while generating. Only the runtime's own failure on a GPU (lost device,
        out of memory) falls back to the CPU, and says so; anything else is logged and the
        server keeps serving on the device it has."""
        if isinstance(error, BackendError) and self.model is not None and self.model.device == "remote":
            # The endpoint failed (down, refused, malformed answer): this request is empty, the
            # status says why, and the backend checks the endpoint's health before trying again.
            log.warning("the inference endpoint failed: %s", error)
            message = f"{error}; completions are empty until it answers"
            if self.status.message != message:
                if self.status.state != "error":  # one pop-up per outage, not one per keystroke
                    self.tell(str(error), types.MessageType.Warning)
                self.set_status(state="error", message=message)
        elif isinstance(error, BackendError) and self.model is not None and self.model.device == "cuda":
            msg = f"The GPU failed during a completion ({str(error)[:200]}); switching to the CPU."
            log.error(msg)
            self.tell(msg, types.MessageType.Warning)
            self.engine = None
            self.start_loading(device="cpu", reason=msg)
        else:
            log.error("completion failed: %s", error, exc_info=error)


def _stamp(model_path: str | None) -> tuple:
    """The model at `model_path` (the setting; empty: the default model) as it is on disk:
    (its manifests and bundle, its other files); see loader.disk_fingerprint."""
    return disk_fingerprint(model_path or None)


def create_server() -> TandemServer:
    from .features import code_actions, context, explain, hover, inline_completion, learn, lifecycle, tracking

    server = TandemServer()
    lifecycle.register(server)
    inline_completion.register(server)
    tracking.register(server)
    hover.register(server)
    explain.register(server)
    code_actions.register(server)
    context.register(server)
    learn.register(server)
    return server
