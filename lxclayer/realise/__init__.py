"""Realisation's engine, which builders use (and which uses no builder):

- :mod:`.context`: what realisation hands a builder (`Context`) and what it hands back (`Result`);
- :mod:`.program`: a program layer (apt, uv, script) as the difference a program makes to the
  stack below, run on an overlay of snapshots (or a materialised copy); mmdebstrap's checks.
"""
