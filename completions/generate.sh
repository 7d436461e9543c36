#!/usr/bin/env bash
# Regenerate the shell completion scripts from the installed p2pcp.
# Users can also run `p2pcp --install-completion` for their current shell.
set -euo pipefail
cd "$(dirname "$0")"
for shell in bash zsh fish; do
  p2pcp --show-completion "$shell" > "p2pcp.$shell"
done
echo "completions written: p2pcp.bash p2pcp.zsh p2pcp.fish"
