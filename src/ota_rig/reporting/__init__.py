"""What people read: report.html, junit.xml for CI, and `rig compare` between two runs. Works on\nresults.json documents only."""
