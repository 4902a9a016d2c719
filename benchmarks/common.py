"""What every benchmark result records about its run: the date, the machine (CPU capability), threads, the command."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time


def run_header(threads: int) -> dict[str, object]:
    """date, machine (architecture, CPUs, torch version and ``get_cpu_capability()``), threads and command line."""
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
        "threads": threads,
        "command": shlex.join(["python", *sys.argv]),
    }
