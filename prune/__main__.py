from prune.cli import main

main()
