"""After a CLI command wrote shared control state of a cluster deployment (``portcullis kill set|lift``,
``portcullis token revoke``): one notice on the deployment's Redis bus, the same the admin API sends, so
running replicas re-read the store at once instead of at their next poll (docs/cluster.md).

The write is committed before this runs and stays done whatever happens here: a notice that cannot be sent
(Redis unreachable, its ``url_ref`` unresolvable, a bad ``storage.redis`` section) is reported on stderr and
the command still succeeds, because every replica's poll applies the change anyway. Without ``--config``,
or without ``storage.redis`` in its gateway.yaml, there is nothing to notify and nothing is printed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from portcullis.cli.safe_text import console, lines_safe

err = console(stderr=True)


def announce_change(config: Path | None, topic: str, payload: str, *, command: str, backstop: str) -> bool:
    """Publish ``topic`` for ``config``'s replicas; True when sent. ``backstop`` says when polls apply it."""
    from portcullis.cli.storage_cmd import StorageSectionInvalid, configured_storage
    from portcullis.errors import ConfigError
    from portcullis.storage.redis_build import announce

    why = "Redis did not take it"
    try:
        storage = configured_storage(config, "redis")
        if config is None or storage is None:
            return False
        # the bus logs its own failure with the error class; here the one line below says it instead
        logging.getLogger("portcullis.storage.bus").addHandler(logging.NullHandler())
        sent = asyncio.run(announce(storage, topic, payload, origin=config / "gateway.yaml"))
    except StorageSectionInvalid as exc:
        sent, why = False, str(exc)
    except ConfigError as exc:  # an unresolvable url_ref: the problem names the reference, never a value
        sent, why = False, exc.message
    except Exception as exc:  # never fail a change that is made because its notice could not be sent
        sent, why = False, type(exc).__name__
    if not sent:
        err.print(lines_safe(f"warning: {command}: done, but the notice to running replicas was not sent ({why}); "
                             f"they apply the change at their next poll ({backstop})"),
                  highlight=False, markup=False)
    return sent
