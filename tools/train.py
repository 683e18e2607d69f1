"""Train a model; see `recon train --help` (same arguments). Works under torchrun."""

import sys

from recon.train import main

if __name__ == "__main__":
    sys.exit(main())
