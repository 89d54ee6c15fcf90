"""The user's journeys (issue 19): what a user does with the two real templates, through the real
CLI (`python -m lxclayer` in its own process), with snapshots on, asserting only what the user
sees: exit codes, one-line messages, which layers the `--json` report says were built, cached or
pulled, archive sha256 against the lock, the lock's bytes, `lock diff`'s lines.

- test_edit_loop.py: a package added to a mid-stack apt layer and removed; a config file, a
  script, a [vars] value edited; a layer added to the template and removed;
- test_lock.py: `lock diff` between the templates and against git HEAD; `lock --upgrade` twice;
- test_cache.py: `cache ls`, `cache push`, `cache push --all`, a build into an empty store from
  the cache; `push` of the image (Debian's docker-registry on loopback);
- test_store.py: `gc` with two projects on one store; blobs damaged, `verify`, `verify --rebuild`,
  `verify --repair`, a build that meets a damaged blob; `build --offline` with no network.

Cost: conftest.py builds both templates once per session into the session's store (the one
tests/test_e2e_template.py builds into, so CI builds each template cold once), and gives each
journey a checkout of its own and a store made of hard links to the session store's files.
"""
