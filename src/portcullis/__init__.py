"""Portcullis: a secure gateway and toolkit for MCP tool services."""

__version__ = "0.1.0"
