"""Where training runs: chunks of clients, the local and Ray executors, the server."""
