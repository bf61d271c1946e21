"""Shared by the benchmarks: describe the machine, and replace one section of BENCHMARKS.md."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def write_section(name: str, text: str, path: Path) -> None:
    """Replace the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` (or append it)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    if path.exists():
        current = path.read_text()
        if start in current and end in current:
            head, rest = current.split(start, 1)
            _, tail = rest.split(end, 1)
            path.write_text(f"{head}{block}{tail}")
            return
        path.write_text(current.rstrip() + "\n\n" + block + "\n")
        return
    path.write_text("# Benchmarks\n\n" + block + "\n")
