"""``python -m experiments.cli`` (used by torchrun)."""

from experiments.cli import main

raise SystemExit(main())
