"""``atp chaos``: the real dataflow and API on the embedded stack, under faults, checked by the oracle.

One run: start a private stack (broker + Redis), the dataflow and the API as child processes;
produce a seeded stream with duplicates and poison at a paced rate; meanwhile kill -9 the dataflow,
lose Redis's data, and pause the dataflow and Redis, on a seeded schedule; a poller reads the API
the whole time. Then read the log back, fold it with the independent oracle, and compare every key
in Redis and over HTTP. The report says what went in, what came out and what each fault cost.
"""

from __future__ import annotations

import os
from typing import Any


def machine() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
