"""A barcode scanner on a serial line: one SKU or code per line (CR, LF or CRLF), ``NOREAD`` when unreadable.

Most fixed-mount scanners (and their USB CDC-ACM mode) speak exactly this. The
line's arrival time is the scan time: a scanner sends within a few ms of the
read, which is a millimetre of belt. A line that is not text is an unreadable
scan, never an exception. The port is reopened after an error (a scanner
unplugged and plugged back).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

MAX_LINE = 256


class SerialScanner:
    def __init__(self, url: str, expected, *, baud: int = 9600, reconnect_s: float = 1.0):
        self.url, self.baud, self.expected, self.reconnect_s = url, baud, expected, reconnect_s
        self.errors = 0
        self.connected = False
        self._last_warned = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)
        self._thread.start()

    def _open(self):
        import serial  # pyserial stays lazy inside its backend (README: imports)

        return serial.serial_for_url(self.url, baudrate=self.baud, timeout=0.1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ser = self._open()
            except Exception as exc:  # noqa: BLE001 - pyserial raises SerialException, OSError, ValueError
                self.errors += 1
                if self.errors == 1 or time.monotonic() - self._last_warned > 60.0:  # once a minute, not per try
                    log.warning("scanner on %s: cannot open (%s); retrying every %.0f s (items go on as no_scan)",
                                self.url, exc, self.reconnect_s)
                    self._last_warned = time.monotonic()
                self._stop.wait(self.reconnect_s)
                continue
            if self.errors:
                log.warning("scanner on %s: open again", self.url)
            self.connected = True
            try:
                self._read(ser)
            except Exception as exc:  # noqa: BLE001 - a port lost mid-read is reopened
                self.errors += 1
                log.warning("scanner on %s: %s; reopening", self.url, exc)
            finally:
                self.connected = False
                ser.close()
            self._stop.wait(self.reconnect_s)

    def _read(self, ser) -> None:
        buf = b""
        while not self._stop.is_set():
            data = ser.read(256)
            if not data:
                continue
            now = time.monotonic()
            buf += data
            while True:
                cut = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
                if cut < 0:
                    break
                line, buf = buf[:cut], buf[cut + 1:]
                if line:
                    self.expected.add_line(line.decode("ascii", "replace"), at=now, source="serial")
            if len(buf) > MAX_LINE:  # no line end in sight: garbage on the line
                self.expected.add_line("", at=now, source="serial")
                buf = b""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
