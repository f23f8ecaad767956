"""The model's own chat template, rendered without transformers.

Instruct models ship a Jinja template (chat_template.jinja beside the ONNX graph, copied
there by the models pipeline). We render it the way transformers does: a sandboxed Jinja
environment with trim_blocks/lstrip_blocks, so the prompt matches what the model was tuned on.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

TEMPLATE_FILE = "chat_template.jinja"


class ChatTemplateError(ValueError):
    """The template is missing or cannot be rendered."""


@lru_cache(maxsize=4)
def _compile(source: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


class ChatTemplate:
    def __init__(self, source: str):
        self.source = source
        try:
            _compile(source)
        except Exception as e:
            raise ChatTemplateError(f"the chat template does not compile: {e}") from None

    @classmethod
    def from_dir(cls, directory: Path) -> "ChatTemplate | None":
        """The template beside a model, or None for a model without one (e.g. a base model)."""
        path = directory / TEMPLATE_FILE
        if path.exists():
            return cls(path.read_text(encoding="utf-8"))
        try:
            cfg = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        tpl = cfg.get("chat_template")
        return cls(tpl) if isinstance(tpl, str) and tpl.strip() else None

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True,
               assistant_prefix: str = "") -> str:
        """The prompt text for `messages`; `assistant_prefix` starts the answer for the model
        (e.g. an opening code fence and the function's signature), so it only writes the rest."""
        try:
            text = _compile(self.source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                tools=None, bos_token="", eos_token="")
        except Exception as e:
            raise ChatTemplateError(f"the chat template failed to render: {e}") from None
        return text + assistant_prefix
