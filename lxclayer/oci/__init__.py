"""OCI images: `image.py` their documents (config, media types), `layout.py` reading and
checking an image layout tar (what push, `check` and boot-test use). The writer is the `oci`
exporter, `outputs/oci.py`."""
