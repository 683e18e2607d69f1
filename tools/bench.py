"""Benchmark a streaming session; see `recon bench --help` (same arguments)."""

import sys

from recon.bench import main

if __name__ == "__main__":
    sys.exit(main())
