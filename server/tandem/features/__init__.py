"""LSP handlers, one module per feature. Each exposes register(server)."""
