"""`python -m orgsync.cli`, as `orgsync`."""

from orgsync.cli import main

raise SystemExit(main())
