from resc.cli import main

raise SystemExit(main())
