"""OCI images read back: `layout.py` reads and checks an image layout tar (what push, `check`
and boot-test use). The writer is the `oci` exporter, `outputs/oci.py`."""
