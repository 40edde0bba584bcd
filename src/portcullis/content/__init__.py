"""Content security: scanners for what upstreams send (tool definitions, results) — pure functions."""
