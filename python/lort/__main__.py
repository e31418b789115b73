from lort.cli import main

main()
