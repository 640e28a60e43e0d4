"""`python -m training ...` is the `train` command (also under `torchrun ... -m training`)."""

import sys

from training.cli import main

sys.exit(main())
