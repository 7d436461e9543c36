"""The p2pcp command as the tests run it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def p2pcp_command() -> list[str]:
    """The p2pcp of this environment (the working tree in a dev venv)."""
    script = Path(sys.executable).parent / "p2pcp"
    if script.exists():
        return [str(script)]
    found = shutil.which("p2pcp")
    return [found] if found else [sys.executable, "-m", "p2pcp"]
