"""The board's entry point (the bundle installs it as /main.py): run the master or a slave.

``/config.json`` says which: ``{"role": "master"}`` (the default) or ``{"role": "slave",
"node": "relay"}`` (firmware/hal/esp32.py ``load_config``).
"""

from firmware.hal import esp32

if esp32.load_config().get("role", "master") == "slave":
    from firmware.slave.main import main
else:
    from firmware.master.main import main

main()
