"""The capture writer process: frames of captured requests on stdin (ml/serving/capture.py), Parquet
partitions every ``--flush-seconds`` and at the end of its input, one JSON line per write on
stdout (``{"written": rows}``, or ``{"dropped": rows, "error": ...}``) for the server's counters.

Started by the server it writes for, at a lower priority (nice 10) so that on a busy machine the
server's requests come first; it exits when the server closes its stdin, after the last write.

    python -m ml.serving.capture_writer --uri URI [--flush-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", required=True, help="where the hourly partitions go")
    parser.add_argument("--flush-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        os.nice(10)
    except OSError:
        pass
    from ml.serving.capture import CaptureWriter, split_frames

    writer = CaptureWriter(args.uri)
    fd, out = sys.stdin.buffer.fileno(), sys.stdout

    def report(**fields) -> None:
        out.write(json.dumps(fields) + "\n")

    def flush() -> None:
        for rows, error in writer.flush():
            if error is None:
                report(written=rows)
            else:
                report(dropped=rows, error=error)
        out.flush()

    buffer = bytearray()
    next_flush = time.monotonic() + args.flush_seconds
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, next_flush - time.monotonic()))
        if ready:
            data = os.read(fd, 1 << 20)
            if not data:  # the server closed the pipe: write the rest and go
                break
            buffer += data
            for body in split_frames(buffer):
                try:
                    writer.add(body)
                except Exception as exc:  # a frame that does not decode: its rows are not known
                    report(dropped=0, error=f"a frame did not decode: {exc!r}")
        if time.monotonic() >= next_flush:
            flush()
            next_flush = time.monotonic() + args.flush_seconds
    flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
