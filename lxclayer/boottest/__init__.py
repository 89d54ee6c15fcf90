"""Boot-test a template the way Proxmox deploys it (unpack, PVE changes, lxc-start, checks)."""
