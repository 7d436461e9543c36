#!/usr/bin/env bash
# Regenerate the shell completion scripts for p2pcp (needs p2pcp installed).
# Users can also run `p2pcp --install-completion` in their shell.
set -euo pipefail
cd "$(dirname "$0")"
python3 - <<'PY'
from typer.completion import get_completion_script

for shell in ("bash", "zsh", "fish"):
    script = get_completion_script(prog_name="p2pcp", complete_var="_P2PCP_COMPLETE", shell=shell)
    with open(f"p2pcp.{shell}", "w", encoding="utf-8") as handle:
        handle.write(script.rstrip("\n") + "\n")
PY
echo "completions written: p2pcp.bash p2pcp.zsh p2pcp.fish"
