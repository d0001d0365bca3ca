"""`python -m hone` (and so `torchrun -m hone train ...`)."""
import sys

from .cli import main

sys.exit(main())
