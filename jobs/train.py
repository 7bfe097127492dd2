"""``python -m jobs.train``: runs :func:`app.entrypoints.train.main` (the code and its options live there)."""

import sys

from app.entrypoints.train import main

if __name__ == "__main__":
    sys.exit(main())
