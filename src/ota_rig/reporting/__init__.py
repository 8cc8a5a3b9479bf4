"""What people read: report.html, junit.xml for CI, and `rig compare` between two runs. Works on
results.json documents only.

report.html is page.render(); the page's parts are scenario.py (one test's section), timeline.py
and serial_log.py (inside a section) and markup.py (the pieces they share), its stylesheet and
script are report.css and report.js. junit.xml is junit.render(); `rig compare` is compare.py."""
