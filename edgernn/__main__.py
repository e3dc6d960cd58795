from edgernn.cli.app import main

main()
