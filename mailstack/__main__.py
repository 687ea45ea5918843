from mailstack.cli import main

raise SystemExit(main())
