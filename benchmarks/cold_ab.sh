#!/bin/bash
# Cold `lxclayer build --locked` of a template (its formats: tar.gz and the OCI image), taking
# turns between versions of lxclayer's code: each build into a new store holding hard links to a
# warm store's downloads only (artifacts/), with the page cache dropped first. Prints each
# build's time and its outputs' sha256s (and how many OCI layer blobs it made while the layers
# built). Needs root.
#
#   LXCLAYER_STORE=~/.cache/lxclayer/store T=debian-13-stock-analysis ROUNDS=2 \
#     benchmarks/cold_ab.sh /path/to/old/checkout /path/to/new/checkout
#
# A checkout is any tree with an `lxclayer/` package (e.g. `git worktree add /tmp/old f458ae8`);
# the project (layers/, locks/, templates/) is this repository's.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
T=${T:-debian-13-stock-analysis}
WARM=${LXCLAYER_STORE:-$HOME/.cache/lxclayer/store}
PY=${PYTHON:-$REPO/.venv/bin/python}
for round in $(seq 1 "${ROUNDS:-2}"); do
  for CODE in "$@"; do
    S=$(dirname "$WARM")/cold-ab-store
    rm -rf "$S"; mkdir -p "$S"; cp -al "$WARM/artifacts" "$S/artifacts"
    P=$(mktemp -d /var/tmp/cold-ab-project.XXXX)
    cp -a "$REPO/layers" "$REPO/locks" "$REPO/templates" "$P/"
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(date +%s.%N)
    if (cd "$P" && LXCLAYER_STORE=$S PYTHONPATH=$CODE "$PY" -m lxclayer build --locked --template "$T" --json \
          --out "$P/dist" > "$P/report.json" 2> "$P/stderr.txt"); then
      t1=$(date +%s.%N)
      "$PY" -c "
import json, sys
d = json.load(open('$P/report.json'))
print('$CODE', f'{$t1 - $t0:.1f} s', ' '.join(f\"{a['format']} {a['sha256'][:16]} (ahead {a.get('ahead', '-')})\" for a in d['archives']))
"
    else
      echo "$CODE failed:"; tail -5 "$P/stderr.txt"
    fi
    rm -rf "$P" "$S"
  done
done
