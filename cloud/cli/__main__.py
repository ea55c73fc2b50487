"""``python -m cloud.cli``."""

from cloud.cli import main

main()
