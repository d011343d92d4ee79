from lrprec.cli import main

main()
