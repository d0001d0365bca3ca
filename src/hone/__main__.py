"""`python -m hone` (and so `torchrun -m hone train ...`)."""
import sys

from .cli import entry

sys.exit(entry())
