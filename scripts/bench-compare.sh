#!/usr/bin/env bash
# bench-compare.sh: the regression guard (issue 16). Compares two revisions of tokensvc
# on this machine, in one run:
#   1. the Go benchmarks of `make bench` (PKGS), both revisions' test binaries run
#      alternately COUNT times each (-count 1 per round, so drift on a shared machine
#      hits both alike), compared with benchstat (golang.org/x/perf/cmd/benchstat,
#      pinned below, installed once into the cache as scripts/vault.sh does for Vault);
#   2. scripts/bench-token.sh -baseline-process (keep-alive GET /token) on both, back to
#      back, then scripts/bench-storm.sh (boot storm, with its bare TLS baseline) on both;
#      then a small table of their -json fields.
# BASE is built from git (git archive into a temp dir); NEW is another commit, or the
# working tree when unset. tokenbench (the load tool) is always the working tree's, so
# both revisions are measured by the same tool.
#
#   make bench-compare BASE=main                  # main against the working tree
#   BASE=HEAD~3 NEW=HEAD scripts/bench-compare.sh
#   BASE=main COUNT=10 SKIP_LOAD=1 scripts/bench-compare.sh   # Go benchmarks only
# Knobs: COUNT (6, at least 6), BENCH (regexp, .), BENCHTIME (go test -benchtime, 1s),
# PKGS (make bench's packages), SKIP_GO / SKIP_LOAD / SKIP_STORM (1 skips that part),
# DURATION (keep-alive phase, 10s), STORM_DEVICES (5000), and the bench scripts' own.
set -euo pipefail

BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da
COUNT=${COUNT:-6}
BENCH=${BENCH:-.}
BENCHTIME=${BENCHTIME:-1s}
PKGS=${PKGS:-./internal/signer ./internal/tokens ./internal/deviceauth ./internal/httpapi}
DURATION=${DURATION:-10s}
STORM_DEVICES=${STORM_DEVICES:-5000}

[[ -n ${BASE:-} ]] || { echo "bench-compare.sh: set BASE=<rev> (e.g. make bench-compare BASE=main)" >&2; exit 2; }
((COUNT >= 6)) || { echo "bench-compare.sh: COUNT=$COUNT: benchstat needs at least 6 runs per side for a confidence interval" >&2; exit 2; }

. "$(dirname "$0")/bench-lib.sh"
bench_init
git rev-parse --verify -q "$BASE^{commit}" >/dev/null || { echo "bench-compare.sh: BASE=$BASE is not a commit" >&2; exit 2; }
[[ -z ${NEW:-} ]] || git rev-parse --verify -q "$NEW^{commit}" >/dev/null || { echo "bench-compare.sh: NEW=$NEW is not a commit" >&2; exit 2; }
command -v jq >/dev/null || {
	echo "bench-compare.sh: installing jq (Debian's)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
}
base_name=$(git rev-parse --short "$BASE")
new_name=${NEW:+$(git rev-parse --short "$NEW")}
new_name=${new_name:-"worktree($(git rev-parse --short HEAD))"}

# benchstat, pinned, built once into the cache (not a dependency of the module).
cache=${TOKENSVC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tokensvc}
benchstat="$cache/benchstat-$BENCHSTAT_VERSION/benchstat"
if [[ ! -x $benchstat ]]; then
	echo "# installing benchstat $BENCHSTAT_VERSION into $(dirname "$benchstat") (first time only)" >&2
	GOBIN="$(dirname "$benchstat")" GOFLAGS= $GO install "golang.org/x/perf/cmd/benchstat@$BENCHSTAT_VERSION"
fi

# tree REV DIR: the source of REV in DIR (git archive), or of the working tree (NEW unset).
tree() {
	if [[ -n $1 ]]; then
		mkdir -p "$2"
		git archive "$1" | tar -x -C "$2"
	else
		ln -s "$root" "$2"
	fi
}

bench_machine "BASE $base_name, NEW $new_name"
if [[ ${SKIP_GO:-} != 1 ]]; then
	tree "$BASE" "$work/src-base"
	tree "${NEW:-}" "$work/src-new"
	# One test binary per package and side, run from the package's directory (testdata).
	for side in base new; do
		for pkg in $PKGS; do
			[[ -d $work/src-$side/$pkg ]] || continue
			(cd "$work/src-$side" && $GO test -c -o "$work/bin-$side/$(basename "$pkg").test" "$pkg")
		done
	done
	echo "# Go benchmarks: $PKGS, -bench '$BENCH' -benchtime $BENCHTIME, $COUNT rounds, sides alternating"
	for round in $(seq "$COUNT"); do
		echo "#   round $round of $COUNT" >&2
		for pkg in $PKGS; do
			for side in base new; do
				bin="$work/bin-$side/$(basename "$pkg").test"
				[[ -x $bin ]] || continue
				(cd "$work/src-$side/$pkg" && timeout -k 30 1800 "$bin" -test.run '^$' -test.bench "$BENCH" \
					-test.benchmem -test.count 1 -test.benchtime "$BENCHTIME") >>"$work/$side.txt"
			done
		done
	done
	echo
	"$benchstat" "base=$work/base.txt" "new=$work/new.txt"
	echo
fi

# side REV SCRIPT ARGS...: one bench script's -json for REV (empty: the working tree);
# its "# ..." header and footer lines go to stderr.
side() {
	local rev=$1 out
	shift
	if [[ -n $rev ]]; then
		out=$(REV="$rev" bash "$@")
	else
		out=$(env -u REV bash "$@")
	fi
	grep '^#' <<<"$out" >&2 || true
	grep -v '^#' <<<"$out"
}

if [[ ${SKIP_LOAD:-} != 1 ]]; then
	for s in base new; do
		rev=$BASE
		[[ $s == new ]] && rev=${NEW:-}
		echo "# keep-alive: $s" >&2
		DURATION=$DURATION side "$rev" scripts/bench-token.sh -baseline-process -json >"$work/load-$s.json"
	done
fi
if [[ ${SKIP_STORM:-} != 1 ]]; then
	for s in base new; do
		rev=$BASE
		[[ $s == new ]] && rev=${NEW:-}
		echo "# storm: $s" >&2
		DEVICES=$STORM_DEVICES side "$rev" scripts/bench-storm.sh -json >"$work/storm-$s.json"
	done
fi

# The table: one line per figure, base and new side by side, and new/base.
row() { # LABEL JQ-FILTER FILE-STEM
	local b n
	b=$(jq -r "$2 // empty" "$work/$3-base.json")
	n=$(jq -r "$2 // empty" "$work/$3-new.json")
	printf '%-52s %12s %12s %8s\n' "$1" "${b:-n/a}" "${n:-n/a}" \
		"$(awk -v b="${b:-0}" -v n="${n:-0}" 'BEGIN { if (b != 0) printf "%.2f", n / b; else print "-" }')"
}
if [[ -s $work/load-base.json || -s $work/storm-base.json ]]; then
	printf '%-52s %12s %12s %8s\n' "figure (same run, same machine)" "base" "new" "new/base"
	if [[ -s $work/load-base.json ]]; then
		row "keep-alive ratio tokensvc/bare handler (up)" '(.ratio // empty) * 1000 | round / 1000' load
		row "keep-alive tokensvc req/s (up)" '.results[] | select(.name == "tokensvc") | .throughputPerSecond | floor' load
		row "keep-alive tokensvc server CPU µs/req (down)" '.results[] | select(.name == "tokensvc") | .serverCpuUsPerRequest' load
		row "keep-alive bare handler server CPU µs/req" '.results[] | select(.name == "baseline") | .serverCpuUsPerRequest' load
	fi
	if [[ -s $work/storm-base.json ]]; then
		row "storm ratio tokensvc/bare TLS handler (up)" '(.ratio // empty) * 1000 | round / 1000' storm
		row "storm tokensvc server CPU µs/device (down)" '.results[] | select(.name == "tokensvc") | .serverCpuUsPerDevice' storm
		row "storm bare TLS handler server CPU µs/device" '.results[] | select(.name == "baseline") | .serverCpuUsPerDevice' storm
		row "storm one ES256 verification CPU µs" '.breakdown.es256VerifyCpuUs' storm
		row "storm non-crypto overhead µs/device (down)" '.breakdown.nonCryptoOverheadUsPerDevice' storm
	fi
fi
