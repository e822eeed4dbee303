"""Runs the unmodified tap-pendo against a local base URL.

tap-pendo hard-codes its API host in `tap_pendo.streams.US_BASE_URL`; pointing that constant at
the emulator is the only change to the tap. Usage: run_tap.py <base_url> <tap arguments...>

Environment shim, not a tap change: tap-pendo 1.2.0 pins pyhumps 1.3.1, which imports
`collections.Mapping`, an alias Python removed in 3.10. Restoring the aliases lets the pinned
versions run on a current interpreter.
"""
import collections
import collections.abc
import sys

for _name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

import tap_pendo  # noqa: E402
import tap_pendo.streams  # noqa: E402

base_url = sys.argv[1]
tap_pendo.streams.US_BASE_URL = base_url
tap_pendo.streams.EU_BASE_URL = base_url
sys.argv = ["tap-pendo"] + sys.argv[2:]
tap_pendo.main()
