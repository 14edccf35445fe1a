"""``python -m tests.support``: see :mod:`tests.support.bench`."""

import sys

from tests.support.bench import main

sys.exit(main())
