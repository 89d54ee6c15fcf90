#!/bin/sh
# The scheduled rebuild of a team's templates (docs/ci.md):
#
#   1. lxclayer outdated --all --security     is a security update out for any pin?  (no: stop, exit 0)
#   2. lxclayer lock --all --upgrade --security-only   move those pins, nothing else
#   3. lxclayer lock diff --format markdown   the review text, per template  -> $REVIEW_DIR
#   4. lxclayer build --locked --all --cache …   rebuild from the new locks, with the shared cache
#   5. lxclayer boot-test --all               boot each template as Proxmox would and run its checks
#   6. lxclayer push --template T REF         publish each template
#
# Steps 4-6 need root, LXC and a registry; --dry-run prints them instead of running them, while
# steps 1-3 still run for real (the locks are upgraded and the review is written). The CI job
# commits locks/ and opens a merge request with the review text.
#
# Environment: LXCLAYER (the command, default `lxclayer`), LXCLAYER_CACHE (oci://… the shared
# cache, optional), LXCLAYER_PUSH (a registry prefix, e.g. oci://registry.example.com/team; each
# template is pushed to PREFIX/<template>; unset: no push), REVIEW_DIR (default review/).
# Exit: 0 nothing to do or all done; 1 a step failed; 2 bad usage.
set -eu

LXCLAYER=${LXCLAYER:-lxclayer}
REVIEW_DIR=${REVIEW_DIR:-review}
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "scheduled-rebuild: unknown argument $arg (usage: $0 [--dry-run])" >&2; exit 2 ;;
  esac
done

step() { echo "== $*" >&2; }
heavy() {
  if [ "$DRY_RUN" = 1 ]; then
    echo "dry-run: would run: $*"
  else
    "$@"
  fi
}

mkdir -p "$REVIEW_DIR"

step "1. outdated --all --security"
set +e
$LXCLAYER outdated --all --security --json > "$REVIEW_DIR/outdated.json"
rc=$?
set -e
case $rc in
  0) echo "no security update for any pin; nothing to rebuild"; exit 0 ;;
  1) $LXCLAYER outdated --all --security > "$REVIEW_DIR/outdated.txt" || true
     cat "$REVIEW_DIR/outdated.txt" ;;
  *) echo "scheduled-rebuild: lxclayer outdated failed (exit $rc)" >&2; exit 1 ;;
esac

# The templates whose locks are in the checkout (locks/<template>.lock).
templates=$(for f in locks/*.lock; do [ -e "$f" ] && basename "$f" .lock; done)
mkdir -p "$REVIEW_DIR/old-locks"
for t in $templates; do cp "locks/$t.lock" "$REVIEW_DIR/old-locks/$t.lock"; done

step "2. lock --all --upgrade --security-only"
$LXCLAYER lock --all --upgrade --security-only || { echo "scheduled-rebuild: lock --upgrade failed" >&2; exit 1; }

step "3. lock diff (the review)"
: > "$REVIEW_DIR/review.md"
for t in $templates; do
  {
    echo "### $t"
    echo
    $LXCLAYER --template "$t" lock diff "$REVIEW_DIR/old-locks/$t.lock" "locks/$t.lock" --format markdown
    echo
  } >> "$REVIEW_DIR/review.md"
done
cat "$REVIEW_DIR/review.md"

cache_opt=""
if [ -n "${LXCLAYER_CACHE:-}" ]; then cache_opt="--cache $LXCLAYER_CACHE --cache-mode push"; fi

step "4. build --locked --all"
# shellcheck disable=SC2086 # cache_opt is two options or none
heavy $LXCLAYER build --locked --all $cache_opt || { echo "scheduled-rebuild: build failed" >&2; exit 1; }

step "5. boot-test --all"
heavy $LXCLAYER boot-test --all || { echo "scheduled-rebuild: boot-test failed" >&2; exit 1; }

step "6. push"
if [ -z "${LXCLAYER_PUSH:-}" ]; then
  echo "LXCLAYER_PUSH is not set: nothing pushed"
else
  for t in $templates; do
    heavy $LXCLAYER push --template "$t" "$LXCLAYER_PUSH/$t" || { echo "scheduled-rebuild: push of $t failed" >&2; exit 1; }
  done
fi
echo "done: locks/ upgraded, review in $REVIEW_DIR/review.md"
