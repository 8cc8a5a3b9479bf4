"""The rig's hands on a board: ports and resets, esptool, the serial monitor, and the network the
board finds the update server on."""
