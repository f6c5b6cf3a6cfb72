"""Request and result models of ``generate``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen


class GenerateRequest(Frozen):
    kind: str = "generate"
    model: str | None = None
    prompts: list[str]
    max_tokens: int = Field(10, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0)
    seed: int = 0
    chat: bool = False
    compare_format: bool = False
    show_tokens: bool = False


class GeneratedToken(Frozen):
    token: str
    token_id: int


class Generation(Frozen):
    prompt: str
    variant: str = ""  # "" or "with trailing space"/"without trailing space" for --compare-format
    formatted_prompt: str
    text: str
    tokens: list[GeneratedToken]
    stopped: str  # "eos" or "max_tokens"
    arithmetic: dict[str, Any] | None = None  # for "A op B =" prompts: expected, found, onset_token


class GenerateResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: GenerateRequest
    chat_template_used: bool
    generations: list[Generation]
