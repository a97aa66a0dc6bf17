from agelab.cli import main

raise SystemExit(main())
