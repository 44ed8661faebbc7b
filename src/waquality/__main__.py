from waquality.cli import main

main()
