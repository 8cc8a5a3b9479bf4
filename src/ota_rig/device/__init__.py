"""What the device is and carries, as data: flash formats, device profiles, the lines the sketch prints,\nthe sketch's configuration and signed releases. Imports nothing else of the rig."""
