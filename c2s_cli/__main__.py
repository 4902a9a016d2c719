from c2s_cli._entry import main

main()
