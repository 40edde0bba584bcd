"""Where ``secret://`` references are read from: one small module per provider.

``env`` and ``file`` read the gateway's environment and mounted files, ``sealed`` an AES-256-GCM
sealed file whose key is in the environment, ``vault`` a Vault or OpenBao KV v2 engine. Each provider
raises :class:`SecretUnavailable` whose reason never holds a value; the caller names the reference.
"""

from portcullis.config.secret_providers.base import SecretProvider, SecretUnavailable
from portcullis.config.secret_providers.env import EnvProvider
from portcullis.config.secret_providers.file import FileProvider
from portcullis.config.secret_providers.sealed import SealedProvider

__all__ = ["EnvProvider", "FileProvider", "SealedProvider", "SecretProvider", "SecretUnavailable"]
