"""Logging set-up for the CLI: UTC timestamps, key=value context in messages."""

import logging
import time


def setup(level: str = "INFO") -> None:
    logging.Formatter.converter = time.gmtime
    logging.basicConfig(level=level, format="%(asctime)sZ %(levelname)s %(name)s %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
