"""``python -m portcullis``."""

from portcullis.cli.main import app

app()
