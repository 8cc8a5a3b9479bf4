"""What the device is and carries, as data: flash formats, device profiles, the lines the sketch
prints, the sketch's configuration and signed releases. Imports nothing of the rig but ota_rig.errors."""
