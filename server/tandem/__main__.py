"""`python -m tandem` / `tandem`: the language server over stdio.

stdout carries the protocol, so logs go to stderr and, once connected, to the editor's log.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__


class EditorLogHandler(logging.Handler):
    """Forwards log records to the editor as window/logMessage (thread-safe)."""

    LEVELS = {logging.ERROR: 1, logging.WARNING: 2, logging.INFO: 3, logging.DEBUG: 4}

    def __init__(self, server):
        super().__init__(logging.INFO)
        self.server = server

    def connected(self) -> bool:
        loop = getattr(self.server, "loop", None)
        return (loop is not None and not loop.is_closed()
                and getattr(self.server.protocol, "transport_open", True))

    def emit(self, record: logging.LogRecord) -> None:
        from lsprotocol import types

        loop = getattr(self.server, "loop", None)
        if not self.connected():
            return  # before `initialize`, or the client is gone: stderr has it
        kind = next((v for k, v in sorted(self.LEVELS.items(), reverse=True) if record.levelno >= k), 4)
        params = types.LogMessageParams(type=types.MessageType(kind), message=self.format(record))
        try:
            loop.call_soon_threadsafe(self.server.window_log_message, params)
        except RuntimeError:
            pass  # loop shutting down


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("learn", "versions", "feedback"):  # the learning loop (tandem/learn/cli.py)
        from .learn.cli import main as learn_cli
        return learn_cli(args)
    parser = argparse.ArgumentParser(prog="tandem", description=__doc__)
    parser.add_argument("--stdio", action="store_true", help="serve over stdio (the default)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"tandem {__version__}")
    args = parser.parse_args(argv)

    # A log line that cannot be written (stderr closed by a client that went away) is dropped,
    # never reported with a traceback to that same closed stream.
    logging.raiseExceptions = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    root = logging.getLogger()
    root.setLevel(args.log_level)
    root.addHandler(stderr)
    logging.getLogger("pygls").setLevel(logging.WARNING)
    # A benign race: the editor cancels a request whose answer is already on its way.
    logging.getLogger("pygls.protocol.json_rpc").addFilter(
        lambda r: "Cancel notification for unknown message id" not in r.getMessage())

    from .protocol import serve_stdio
    from .server import create_server

    server = create_server()
    editor = EditorLogHandler(server)
    if args.log_level != "DEBUG":
        # Editors show the server's stderr too (VS Code at error level): once our records
        # reach the editor as window/logMessage, do not print them a second time.
        stderr.addFilter(lambda r: not (r.name.startswith("tandem") and editor.connected()))
    editor.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("tandem").addHandler(editor)
    # Framing, validation and the lifecycle (exit codes, a client that goes away): protocol.py.
    serve_stdio(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
