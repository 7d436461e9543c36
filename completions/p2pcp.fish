_p2pcp_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _P2PCP_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _p2pcp_completion p2pcp
