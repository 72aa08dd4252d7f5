"""HTTP API: thin routes that parse, call a service object and shape the answer."""
