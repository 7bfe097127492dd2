"""``python -m jobs.drift``: runs :func:`app.entrypoints.drift.main` (the code and its options live there)."""

import sys

from app.entrypoints.drift import main

if __name__ == "__main__":
    sys.exit(main())
