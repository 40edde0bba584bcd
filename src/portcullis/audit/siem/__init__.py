"""SIEM export of audit records: JSON-lines files, syslog, signed webhooks, behind a retry queue.

Layers (each module's docstring states its contract):

* ``interface`` the ``Exporter`` seam, ``ExportFailed``, and the test doubles
* ``queue``     ``ExportQueue``: per-exporter bounded buffers, batching, backoff, drop counters
* ``jsonl``     ``JsonlExporter``: local files with size rotation
* ``syslog``    ``SyslogExporter``: RFC 5424 over UDP, TCP (RFC 6587) or TLS (RFC 5425)
* ``webhook``   ``WebhookExporter``: HTTPS POST with an HMAC-SHA256 signature; ``verify_signature``
* ``config``    the ``siem`` configuration models, ``build_exporters`` and ``build_queue``

Seam: ``AuditWriter(export=queue.offer)``: the writer offers each durable batch's records in chain
order, before its callers resume. ``offer`` is synchronous, never blocks, never raises; records that
cannot be exported are counted in ``queue.stats()``.
Export is a copy for monitoring: the hash-chained store stays the record of truth.
"""

from portcullis.audit.siem.config import (
    ExportConfig,
    JsonlExportConfig,
    SiemExportConfig,
    SyslogExportConfig,
    WebhookExportConfig,
    build_exporters,
    build_queue,
)
from portcullis.audit.siem.interface import Exporter, ExportFailed, FailingExporter, RecordingExporter
from portcullis.audit.siem.jsonl import JsonlExporter
from portcullis.audit.siem.queue import ExporterStats, ExportQueue
from portcullis.audit.siem.syslog import SyslogExporter, format_message
from portcullis.audit.siem.webhook import WebhookExporter, signature_header, verify_signature

__all__ = [
    "ExportConfig",
    "ExportFailed",
    "ExportQueue",
    "Exporter",
    "ExporterStats",
    "FailingExporter",
    "JsonlExportConfig",
    "JsonlExporter",
    "RecordingExporter",
    "SiemExportConfig",
    "SyslogExportConfig",
    "SyslogExporter",
    "WebhookExportConfig",
    "WebhookExporter",
    "build_exporters",
    "build_queue",
    "format_message",
    "signature_header",
    "verify_signature",
]
