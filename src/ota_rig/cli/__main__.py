"""`python -m ota_rig.cli`: the `rig` command."""

import sys

from ota_rig.cli import main

sys.exit(main())
