"""The demo billing service, starting ``SLOW_START_S`` seconds late (a slow or loaded machine).

Logs the service kit at INFO to stderr (the gateway's log), so a test can see keys being adopted.
"""

from __future__ import annotations

import logging
import os
import time

from portcullis.demo.services.billing import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("portcullis.service").setLevel(logging.INFO)
    time.sleep(float(os.environ.get("SLOW_START_S", "0")))
    main()
