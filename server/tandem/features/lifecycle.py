"""Start-up, settings and status: answer `initialize` at once, load the model after."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict

from lsprotocol import types

log = logging.getLogger(__name__)

STATUS_COMMAND = "tandem.status"


def register(server) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls, params: types.InitializeParams):
        ls.loop = asyncio.get_running_loop()  # for thread-safe calls from worker threads
        # initializationOptions are the settings of clients without workspace/configuration
        # (e.g. a bare Neovim setup); the editor's configuration, when it has one, wins later.
        opts = params.initialization_options
        ls.init_settings = opts.get("tandem", opts) if isinstance(opts, dict) else None

    @server.feature(types.INITIALIZED)
    async def initialized(ls, params: types.InitializedParams):
        if ls.init_settings is not None:
            ls.apply_settings(ls.init_settings)
        await ls.pull_settings()
        if ls.model is None and ls._load_task is None:
            ls.start_loading()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls, params: types.DidChangeConfigurationParams):
        caps = ls.client_capabilities.workspace
        if caps and caps.configuration:
            await ls.pull_settings()
        elif isinstance(params.settings, dict) and "tandem" in params.settings:
            ls.apply_settings(params.settings["tandem"])

    @server.command(STATUS_COMMAND)
    def status(ls, *args):
        return {**asdict(ls.status), "settings": asdict(ls.settings),
                "modelInfo": ls.model.describe() if ls.model else None, "warm": dict(ls.warmer.stats),
                "lastCompletion": ls.last_completion}
