"""`python -m rama`: the `rama` command (what torchrun and other launchers call)."""

import sys

from rama.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
