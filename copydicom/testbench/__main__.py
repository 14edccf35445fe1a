"""``python -m copydicom.testbench``: see :mod:`copydicom.testbench.bench`."""

import sys

from copydicom.testbench.bench import main

sys.exit(main())
