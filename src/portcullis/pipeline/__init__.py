"""Portcullis."""
