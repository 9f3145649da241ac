"""``python -m client.cli``."""

from .app import main

main()
