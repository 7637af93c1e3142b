"""`python -m api` is the `tally` command line."""

from api.cli import main

main(prog_name="tally")
