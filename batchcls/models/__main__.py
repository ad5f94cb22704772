"""`python -m batchcls.models` prints the zoo table; `python -m batchcls.models export ...` exports ONNX."""

import sys

from batchcls.models import export, table

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["export"]:
        sys.exit(export.main(argv[1:]))
    sys.exit(table.main(argv))
