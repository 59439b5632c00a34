from logpipe.cli import main

raise SystemExit(main())
