"""`rig check-server`: what each device profile would do against any update server.

server_check runs each profile's device client (ota_rig.virtual.device_client: the twin's own
TLS client and HTTPUpdate, no board) against the URL and gathers what it saw; findings turns
that into one-sentence findings, each with its reason; report writes the table, the JSON file
and the markdown for a pull-request comment.
"""
