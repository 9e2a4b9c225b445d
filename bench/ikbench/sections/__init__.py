"""One module per bench/run section; each registers itself on import (see ikbench/__init__.py)."""
