from kyso.api.cli import main

main()
