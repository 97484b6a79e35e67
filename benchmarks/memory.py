"""Process memory for the benchmarks (Linux /proc): current and peak resident set size in MiB.

The benchmark scripts run as `python benchmarks/<script>.py`, so this file is importable as `memory`.
"""

from __future__ import annotations


def status_mb(field: str) -> float:
    """A /proc/self/status field in MiB: VmRSS (now) or VmHWM (peak since start or the last reset)."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1]) / 1024


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (clear_refs 5) and return the current RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS")
