"""``python -m jobs.preprocess``: runs :func:`app.entrypoints.preprocess.main` (the code and its options live there)."""

import sys

from app.entrypoints.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
