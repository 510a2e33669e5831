"""What machine a benchmark or fault run ran on, for its report."""

from __future__ import annotations

import os
from typing import Any


def machine() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
