from stepwell_cli.main import main

raise SystemExit(main())
