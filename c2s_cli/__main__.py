from c2s_cli.cli import main

main()
