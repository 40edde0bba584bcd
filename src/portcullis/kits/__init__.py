"""Safe building blocks for MCP service tools: files, http, sandbox, code, sql."""
