"""What the kernel says about this process."""

from __future__ import annotations

from pathlib import Path


def own_peak_rss_mib() -> float:
    """This process's peak RSS since its exec (VmHWM), in MiB. A parent's ``ru_maxrss`` of a child is
    no good: it keeps the RSS the child had between fork and exec, which is the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
