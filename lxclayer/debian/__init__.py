"""Debian helpers shared by the mmdebstrap, apt, uv and script builders.

- :mod:`.deb822`: Packages/Release/status paragraphs.
- :mod:`.debfile`: the control fields of a .deb, read without dpkg.
- :mod:`.apt`: resolution with apt against the archive's indices (host side).
- :mod:`.fetch`: downloads of pinned artifacts into the store, checked by sha256.
- :mod:`.repo`: a flat apt repository holding exactly the pinned .debs.
- :mod:`.chroot`: running programs in a root file system in a private mount and pid
  namespace, so that no mount survives the program, whatever happens to lxclayer.
- :mod:`.normalise`: the reproducibility clean-up applied to every layer before it is stored.

What the chroot builders share (materialise, run, normalise, diff) is realisation's engine,
:mod:`lxclayer.realise.program`.
"""
