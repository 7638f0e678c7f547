"""`python -m pokevq …` works the same as `pokevq …`."""

import sys

from pokevq.cli import main

sys.exit(main())
