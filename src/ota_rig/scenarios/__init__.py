"""The OTA scenarios: what a device must do against a server, each on evidence it did not write.

Run them with `rig run`, or from any project with `pytest --pyargs ota_rig.scenarios --ota-board ...`.
"""
