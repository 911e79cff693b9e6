"""What the benchmark scripts share: the machine they ran on, and their section of RESULTS.md."""

from __future__ import annotations

import platform
import re
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def write_section(path: Path, section: str, body: str) -> None:
    """Replace the section headed ``section`` (a ``## `` line) of ``path`` with ``body``, or append it; others kept."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{section}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
