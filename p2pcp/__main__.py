from p2pcp.cli.app import main

main()
