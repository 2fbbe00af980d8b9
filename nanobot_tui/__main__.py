from nanobot_tui.cli import main

raise SystemExit(main())
