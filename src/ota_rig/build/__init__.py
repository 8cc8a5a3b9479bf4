"""Builds of the reference sketch: arduino-cli's for real boards, the rig's virtual ones for the
twin, and the preflight check of an artifact set against the board it is for."""
