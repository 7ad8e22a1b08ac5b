from metareward.cli import main

main()
