"""``python -m mtl_edge.devbed.adbd``: the device-side adb server (see the package's docstring)."""

import sys

from mtl_edge.devbed.adbd.server import main

if __name__ == "__main__":
    sys.exit(main())
