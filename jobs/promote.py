"""``python -m jobs.promote``: runs :func:`app.entrypoints.promote.main` (the code and its options live there)."""

import sys

from app.entrypoints.promote import main

if __name__ == "__main__":
    sys.exit(main())
