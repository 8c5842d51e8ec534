"""`python -m zoo ...`: see zoo/cli.py."""
from zoo.cli import main

main()
