"""A run's records: results.json and its schema, the pytest plugin that writes them, and run folders."""
