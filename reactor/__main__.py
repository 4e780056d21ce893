from reactor.ops.cli import main

raise SystemExit(main())
