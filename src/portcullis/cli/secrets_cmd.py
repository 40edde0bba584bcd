"""``portcullis secrets``: make and check the sealed files that ``secret://sealed/<path>#field`` reads.

``keygen`` prints a new key (put it in the key variable, ``PORTCULLIS_SEALED_KEY`` by default, of the
gateway only); ``seal`` encrypts a JSON or YAML mapping of names to strings under that key; ``check``
opens a sealed file and lists its field names. No command ever prints a sealed value.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import yaml

from portcullis.cli.safe_text import console, lines_safe
from portcullis.config.secret_providers import SecretUnavailable
from portcullis.config.secret_providers.sealed import DEFAULT_KEY_ENV, decode_key, generate_key, seal, unseal

secrets_app = typer.Typer(no_args_is_help=True, help="Secrets: seal files for secret://sealed/ references.")
out = console()
err = console(stderr=True)

KeyEnv = Annotated[str, typer.Option("--key-env", help="Environment variable holding the base64 32-byte key.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(lines_safe(message), highlight=False, markup=False)
    raise typer.Exit(code)


def _key(key_env: str) -> bytes:
    try:
        return decode_key(os.environ.get(key_env))
    except SecretUnavailable as exc:
        _fail(f"{key_env}: {exc.why}", 2)


@secrets_app.command("keygen")
def keygen() -> None:
    """Print a new random sealing key (base64)."""
    sys.stdout.write(generate_key() + "\n")


@secrets_app.command("seal")
def seal_cmd(source: Annotated[Path, typer.Argument(help="JSON or YAML mapping of names to strings; - for stdin.",
                                                    allow_dash=True)],
             output: Annotated[Path, typer.Option("--output", "-o", help="The sealed file to write (mode 0600).")],
             key_env: KeyEnv = DEFAULT_KEY_ENV) -> None:
    """Seal SOURCE's mapping into --output under the key in --key-env."""
    key = _key(key_env)
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8")
        mapping = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # the parser's messages can quote the secrets
        _fail(f"{source}: not a readable JSON or YAML file", 2)
    if not isinstance(mapping, dict):
        _fail(f"{source}: not a mapping of names to strings", 2)
    try:
        data = seal(mapping, key)
    except ValueError as exc:
        _fail(f"{source}: {exc}", 2)
    fd, temp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    out.print(lines_safe(f"sealed {len(mapping)} field(s) into {output}"), highlight=False, markup=False)


@secrets_app.command("check")
def check(sealed: Annotated[Path, typer.Argument(help="A sealed file.", dir_okay=False)],
          key_env: KeyEnv = DEFAULT_KEY_ENV) -> None:
    """Open SEALED with the key in --key-env and list its field names (never the values); exit 1 if it fails."""
    key = _key(key_env)
    try:
        mapping = unseal(sealed.read_bytes(), key)
    except OSError:
        _fail(f"{sealed}: cannot be read")
    except SecretUnavailable as exc:
        _fail(f"{sealed}: {exc.why}")
    if not isinstance(mapping, dict):
        _fail(f"{sealed}: does not hold a mapping")
    out.print(lines_safe("\n".join(sorted(str(name) for name in mapping))), highlight=False, markup=False)
