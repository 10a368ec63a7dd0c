"""HTTP surface: OpenAI wire format, handlers, SSE framing, error bodies, decision headers."""
