"""``python -m segmatch``: the command line."""

from segmatch.cli import main

main()
