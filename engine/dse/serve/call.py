"""A client's chat request once read, whatever protocol it came in: what the gateway resolves and sends."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backends.types import ChatOptions, JsonOutput, Message


@dataclass(frozen=True)
class ChatCall:
    """`model` as the client wrote it; `include_usage` is OpenAI's `stream_options.include_usage`."""

    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    options: ChatOptions = field(default_factory=ChatOptions)
    json_output: JsonOutput | None = None
    include_usage: bool = False
