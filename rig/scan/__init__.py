"""The expected product from upstream: a scan joined to the item by belt position.

A barcode scanner upstream of the camera tunnel (one SKU or code per line on a
serial line: :mod:`.serial_source`) or the WMS over MQTT (``<prefix>/<rig>/expected``:
:mod:`.mqtt_source`) says which product is coming. :class:`ExpectedProducts`
holds the scans and joins each to the item the trigger captures at the belt
position the scan predicts; :func:`.decide.decide_with_scan` scores the item
against the scanned product's references with image identification as the
cross-check (``wrong_item``, ``no_scan``, ``unreadable_scan``, ``unknown_sku``).
"""

from .join import NOREAD, ExpectedProducts, Scan, open_scan_source

__all__ = ["NOREAD", "ExpectedProducts", "Scan", "open_scan_source"]
