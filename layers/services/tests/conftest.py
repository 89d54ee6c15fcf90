"""Tests of the stock-analysis template content that run without the template (no data
stores, no client libraries): the shared service package and the consistency of the files."""

import sys
from pathlib import Path

# The package lives in a files layer (copied into the template as it is): never
# leave __pycache__ folders in it.
sys.dont_write_bytecode = True

SERVICES = Path(__file__).resolve().parents[1]
LAYERS = SERVICES.parent
sys.path.insert(0, str(SERVICES / "root/opt/stock-analysis/lib"))
