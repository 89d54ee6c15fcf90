"""The output formats by name, and the module under lxclayer.outputs that exports each: what
definitions check a template's `formats` against, without importing the exporters (which use
definitions' types).

Adding a format is one module in lxclayer/outputs/ and one line here.
"""

from __future__ import annotations

# format -> module under lxclayer.outputs that defines EXPORTERS (a dict format -> Exporter)
FORMATS: dict[str, str] = {
    "tar.gz": "tarball",
    "tar.zst": "tarball",
    "oci": "oci",
}
