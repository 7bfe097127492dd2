"""``python -m jobs.batch_predict``: runs :func:`app.entrypoints.batch_predict.main` (the code and its options live there)."""

import sys

from app.entrypoints.batch_predict import main

if __name__ == "__main__":
    sys.exit(main())
