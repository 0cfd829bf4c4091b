"""`python -m sae_lens.dashboard` (see `sae_lens.dashboard.cli`)."""

import sys

from sae_lens.dashboard.cli import main

if __name__ == "__main__":
    sys.exit(main())
