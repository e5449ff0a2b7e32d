"""What a benchmark report says about where it ran: the machine and the versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine", "versions"]

PACKAGES = ("voice-engine", "trio", "hypercorn", "wsproto", "numpy", "webrtcvad-wheels", "soxr")


def versions() -> dict[str, str]:
    """Python's version and the installed versions of the packages that shape the figures."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "?"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """The CPU model, the CPUs this process may use, the platform and the load average."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu_model": _cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "load_average": load,
    }
