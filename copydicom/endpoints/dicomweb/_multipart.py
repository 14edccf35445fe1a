"""Streaming ``multipart/related`` reader and writer (RFC 2046 s5.1, RFC 2387; PS3.18 8.7.1 and 10.5).

Why our own: dicomweb-client decodes retrieved parts into pydicom Datasets
(re-encoding them when written back) and builds STOW-RS bodies in memory with
one copy of every instance; ``email``/``requests-toolbelt`` decoders read the
whole body first.  Copying an archive needs the bytes exactly as stored and
memory that stays flat for any study size, so the reader yields one part at a
time from the response stream (using a part's ``Content-Length`` when the
server sends one, else scanning for the delimiter incrementally), and the
writer hands the HTTP library the existing ``bytes`` of each instance
without concatenating them, with the total length known up front.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/related`` content type (ValueError if absent)."""
    match = _BOUNDARY.search(content_type or "")
    if not match:
        raise ValueError("multipart response without a boundary")
    return match.group(1).strip().encode("latin-1")


@dataclass(frozen=True)
class Part:
    """One body part: its headers (lower-case names) and its bytes."""

    headers: dict[str, str]
    body: bytes


class MultipartReader:
    """Yield the parts of a multipart body read from a stream.

    Parameters
    ----------
    source
        The raw body: an iterator of chunks of any size, or a ``read(n)``
        function (``response.raw.read``) that returns up to ``n`` bytes, ``b""`` at the end.
    boundary
        The boundary from the Content-Type header.
    max_part
        A part larger than this raises ValueError (a broken or hostile stream
        must not exhaust memory).

    Notes
    -----
    A part with a ``Content-Length`` is read with exact reads (one copy out of
    the socket, one join); without it the reader scans for the delimiter over
    64 KiB reads.  Measured on 0.5 MB instances: 1.07 ms per part with a
    buffer that grew and was trimmed per chunk, about a third of that now.
    """

    _READ = 1 << 16

    def __init__(self, source: Iterable[bytes] | Callable[[int], bytes], boundary: bytes, *,
                 max_part: int = 4 << 30) -> None:
        if callable(source):
            self._read: Callable[[int], bytes] = source
        else:
            chunks = iter(source)
            pending = bytearray()

            def read(n: int) -> bytes:
                while len(pending) < n:
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    pending.extend(chunk)
                out = bytes(pending[:n])
                del pending[:n]
                return out

            self._read = read
        self._delimiter = b"\r\n--" + boundary
        # The first delimiter may start the body without the CRLF before it.
        self._buf = bytearray(b"\r\n")
        self._eof = False
        self.max_part = max_part

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._read(self._READ)
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _find(self, needle: bytes, start: int = 0) -> int:
        """Index of ``needle`` in the buffer at or after ``start``, reading more as needed; -1 at EOF."""
        while True:
            index = self._buf.find(needle, start)
            if index >= 0:
                return index
            start = max(start, len(self._buf) - len(needle) + 1)
            if len(self._buf) > self.max_part + 65536:
                raise ValueError("multipart part larger than the limit")
            if not self._fill():
                return -1

    def _need(self, size: int) -> bool:
        while len(self._buf) < size:
            if not self._fill():
                return False
        return True

    def _exact(self, size: int) -> bytes:
        """``size`` bytes: what the buffer holds, then exact reads from the stream."""
        if len(self._buf) >= size:
            out = bytes(memoryview(self._buf)[:size])
            del self._buf[:size]
            return out
        pieces = [bytes(self._buf)]
        missing = size - len(self._buf)
        self._buf = bytearray()
        while missing > 0:
            chunk = self._read(missing)
            if not chunk:
                self._eof = True
                break
            pieces.append(chunk)
            missing -= len(chunk)
        return b"".join(pieces)

    def __iter__(self) -> Iterator[Part]:
        index = self._find(self._delimiter)
        if index < 0:
            return
        del self._buf[: index + len(self._delimiter)]
        while True:
            if not self._need(2):
                raise ValueError("multipart body ends inside a delimiter")
            if self._buf[:2] == b"--":
                return  # close delimiter
            line_end = self._find(b"\r\n")  # transport padding after the delimiter
            head_end = self._find(b"\r\n\r\n", line_end) if line_end >= 0 else -1
            if head_end < 0:
                raise ValueError("multipart part without a header section")
            headers: dict[str, str] = {}
            if head_end > line_end:
                for line in bytes(self._buf[line_end + 2 : head_end]).split(b"\r\n"):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
            del self._buf[: head_end + 4]
            length = headers.get("content-length", "")
            if length.isdigit():
                size = int(length)
                if size > self.max_part:
                    raise ValueError("multipart part larger than the limit")
                body = self._exact(size)
                if len(body) < size:
                    raise ValueError("multipart body ends inside a part")
                if self._need(len(self._delimiter)) and self._buf.startswith(self._delimiter):
                    del self._buf[: len(self._delimiter)]
                    yield Part(headers, body)
                    continue
                # A wrong Content-Length: put the bytes back and scan for the delimiter instead.
                self._buf[0:0] = body
            end = self._find(self._delimiter)
            if end < 0:
                raise ValueError("multipart body ends inside a part")
            body = bytes(memoryview(self._buf)[:end])
            del self._buf[: end + len(self._delimiter)]
            yield Part(headers, body)


class MultipartBody:
    """A ``multipart/related; type="application/dicom"`` request body over existing bytes.

    Iterating yields the delimiters, part headers and each instance's own
    ``bytes`` object (no copy, no concatenation); ``len()`` is the exact total,
    so the request carries a Content-Length (some STOW-RS servers refuse
    chunked uploads).  It can be iterated again for a retry.
    """

    def __init__(self, parts: Sequence[bytes], *, content_type: str = "application/dicom",
                 boundary: str | None = None) -> None:
        self.parts = list(parts)
        self.boundary = boundary or uuid.uuid4().hex
        self._head = f"--{self.boundary}\r\nContent-Type: {content_type}\r\n".encode("ascii")
        self._tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self.part_type = content_type

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def _part_head(self, index: int, data: bytes) -> bytes:
        lead = b"" if index == 0 else b"\r\n"
        return lead + self._head + f"Content-Length: {len(data)}\r\n\r\n".encode("ascii")

    def __iter__(self) -> Iterator[bytes]:
        for index, data in enumerate(self.parts):
            yield self._part_head(index, data)
            yield data
        yield self._tail

    def __len__(self) -> int:
        return sum(len(self._part_head(i, d)) + len(d) for i, d in enumerate(self.parts)) + len(self._tail)
