#compdef p2pcp

_p2pcp_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _P2PCP_COMPLETE=complete_zsh p2pcp)
}

compdef _p2pcp_completion p2pcp
