"""``python -m copydicom``: the same as the ``copydicom`` console script."""

import sys

from copydicom.cli import main

sys.exit(main())
