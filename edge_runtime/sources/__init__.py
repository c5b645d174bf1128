"""Live sensor streams: serial ports, sockets, CSV replays and stdin, as events.

::

    src = open_source("serial:/dev/ttyUSB0@115200", manifest)
    for ev in iter_events(src):
        if isinstance(ev, Sample):  ...   # ev.counts: int16 (C,)
        elif isinstance(ev, Gap):   ...   # the stream broke: reset streaming state
        else:                       ...   # Bad: a rejected line or frame (counted)

Sources (``spec``):

- ``serial:PATH[@BAUD]`` or a bare ``/dev/...`` path: a serial device (115200 baud
  unless given); ``serial:`` also takes any pyserial URL.
- any pyserial URL (``socket://host:port``, ``rfc2217://host:port``, ``loop://``),
  opened with :func:`serial.serial_for_url`.
- ``csv:FILE``: a recorded stream in the line protocol, replayed at the
  manifest's sample rate with ``realtime=True``, else as fast as it is read.
- ``-``: standard input (paced like ``csv:`` with ``realtime=True``).

The wire formats (text lines and binary frames) are specified in
docs/protocol-serial.md; :mod:`edge_runtime.frames` implements the frames.
Every byte is untrusted: nothing a sensor sends can raise here; it becomes a
:class:`Bad` event. A lost port (``SerialException`` or end of file) is reopened
with exponential back-off and reported as a :class:`Gap` before the next sample.

Modules, one job each:

- :mod:`~edge_runtime.sources.events`: the events and the counts kept of them;
- :mod:`~edge_runtime.sources.limits`: the accepted count range per channel;
- :mod:`~edge_runtime.sources.lines`: the line protocol (pure decoding);
- :mod:`~edge_runtime.sources.decode`: frames with range checks, the automatic
  choice of encoding, sequence numbers -> gaps (pure decoding);
- :mod:`~edge_runtime.sources.readers`: serial / file / stdin readers, source
  specs, reopening with back-off;
- :mod:`~edge_runtime.sources.source`: the :class:`Source` (pacing, reconnects,
  stop) and :func:`open_source`;
- :mod:`~edge_runtime.sources.bridge`: socat joining two ptys, for replays over a
  real tty.
"""

from edge_runtime.sources.decode import SNIFF_LIMIT
from edge_runtime.sources.events import Bad, Event, Gap, Outage, Sample, SourceError, SourceStats
from edge_runtime.sources.limits import ChannelLimits, channel_limits
from edge_runtime.sources.lines import MAX_LINE, LineDecoder, Units
from edge_runtime.sources.readers import DEFAULT_BAUD, Backoff, PortLost, parse_spec
from edge_runtime.sources.source import Encoding, Source, iter_events, open_source

__all__ = [
    "DEFAULT_BAUD",
    "MAX_LINE",
    "SNIFF_LIMIT",
    "Backoff",
    "Bad",
    "ChannelLimits",
    "Encoding",
    "Event",
    "Gap",
    "LineDecoder",
    "Outage",
    "PortLost",
    "Sample",
    "Source",
    "SourceError",
    "SourceStats",
    "Units",
    "channel_limits",
    "iter_events",
    "open_source",
    "parse_spec",
]
