from orgsync.cli import main

raise SystemExit(main())
