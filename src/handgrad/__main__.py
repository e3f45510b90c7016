"""``python -m handgrad`` runs the command-line interface."""

from handgrad.cli import main

raise SystemExit(main())
