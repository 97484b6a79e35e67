"""``python -m multibox``: the CLI, also the form ``torchrun ... -m multibox train ...`` uses."""

import sys

from multibox.cli import main

if __name__ == "__main__":
    sys.exit(main())
