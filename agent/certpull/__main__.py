"""`python -m certpull` is the same as the `certpull` console script."""

import sys

from certpull.cli import main

sys.exit(main())
