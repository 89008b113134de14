"""``python -m delula``: the CLI, whose ``worker`` command runs the scheduler (both faces meet here)."""
import sys

from .cli import main
from .scheduler import run_worker

sys.exit(main(worker=run_worker))
