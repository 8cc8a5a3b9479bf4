"""The HTTPS update server a device polls, its record of every connection, the faults it can play,
the certificates it presents, and a hostile client that abuses it."""
