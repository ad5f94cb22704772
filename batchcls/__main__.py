"""`python -m batchcls COMMAND`: the same commands as the `batchcls` script."""

import sys

from batchcls.cli import main

sys.exit(main())
