"""``python -m jobs.tune``: runs :func:`app.entrypoints.tune.main` (the code and its options live there)."""

import sys

from app.entrypoints.tune import main

if __name__ == "__main__":
    sys.exit(main())
