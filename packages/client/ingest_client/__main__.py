from ingest_client.cli import main

raise SystemExit(main())
