from stepsize.cli import main

raise SystemExit(main())
