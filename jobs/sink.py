"""``python -m jobs.sink``: runs :func:`app.entrypoints.sink.main` (the code and its options live there)."""

import sys

from app.entrypoints.sink import main

if __name__ == "__main__":
    sys.exit(main())
