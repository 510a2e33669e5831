"""What the kernel says about this process."""

from __future__ import annotations

from pathlib import Path


def own_peak_rss_mib() -> float:
    """This process's peak RSS since its exec (VmHWM), in MiB. A parent's ``ru_maxrss`` of a child is
    no good: it keeps the RSS the child had between fork and exec, which is the parent's."""
    return _status_mib("VmHWM:")


def own_rss_mib() -> float:
    """This process's RSS now (VmRSS), in MiB."""
    return _status_mib("VmRSS:")


def _status_mib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
