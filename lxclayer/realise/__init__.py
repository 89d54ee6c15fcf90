"""Realisation's engine, which builders use: :mod:`.program` builds a program layer (apt, uv,
script; mmdebstrap's checks) as the difference a program makes to the stack below."""
