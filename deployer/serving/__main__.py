"""``python -m deployer.serving``: how the scoring image starts the server."""

import sys

from .cli import main

sys.exit(main())
