#!/usr/bin/env bash
# bench-filestore.sh: the embedded store at fleet size, this checkout next to a base
# revision, in one run (BASE, default main: the v1 log store before bbolt). Runs
# internal/store/filestore/scale_test.go in both (copied into the base, which it
# compiles against: it uses only Open, the store methods and WriteSnapshotForTest):
# a DEVICES-device store (written as a v1 snapshot, opened once — the new store
# migrates it — then measured: Open to ready, live heap after Open + a GetDevice, file
# size, GetDevice latency), and the import rate of IMPORT devices through WRITERS
# concurrent CreateDevice callers: into an empty store, the same again (every device
# there: an import resumed), and into the DEVICES-device store (new IDs spread among
# the existing ones: "import at 10^6").
#
#   scripts/bench-filestore.sh                         # 10^6 devices, 20,000 imported by 64 writers
#   DEVICES=100000 IMPORT=5000 WRITERS=256 BASE=HEAD~3 scripts/bench-filestore.sh
#
# Prints one "SCALE {json}" line per revision and the new/base ratios. Needs about
# 2 GiB of memory at 10^6 devices (the v1 snapshot writer and the migration hold
# every record) and 1.5 GiB of temporary disk.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-main} DEVICES=${DEVICES:-1000000} IMPORT=${IMPORT:-20000} WRITERS=${WRITERS:-64}
work=$(mktemp -d)
cleanup() { git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
git worktree add --detach -q "$work/base" "$BASE"
cp internal/store/filestore/scale_test.go "$work/base/internal/store/filestore/"

measure() { # dir label
	(cd "$1" && TOKENSVC_SCALE_DEVICES=$DEVICES TOKENSVC_SCALE_IMPORT=$IMPORT TOKENSVC_SCALE_WRITERS=$WRITERS \
		TMPDIR="$work" go test -v -run '^TestScale$' -count=1 -timeout 60m ./internal/store/filestore/) |
		sed -n 's/^SCALE //p' | jq -c --arg rev "$2" '. + {rev: $rev}'
}
echo "# $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); devices $DEVICES, import $IMPORT by $WRITERS writers"
base=$(measure "$work/base" "$BASE ($(git rev-parse --short "$BASE"))")
echo "SCALE $base"
head=$(measure . "HEAD ($(git rev-parse --short HEAD))")
echo "SCALE $head"
jq -n -c --argjson b "$base" --argjson h "$head" '{
	openSpeedup: ($b.openSeconds / $h.openSeconds),
	heapRatio: ($h.liveHeapMiB / $b.liveHeapMiB),
	fileRatio: ($h.fileMiB / $b.fileMiB),
	importSpeedup: ($h.importDevicesPerSecond / $b.importDevicesPerSecond),
	reimportSpeedup: (if $b.reimportDevicesPerSecond then $h.reimportDevicesPerSecond / $b.reimportDevicesPerSecond else null end),
	importAtScaleSpeedup: (if $b.importAtScaleDevicesPerSecond then $h.importAtScaleDevicesPerSecond / $b.importAtScaleDevicesPerSecond else null end),
	importCpuRatio: (if $b.importCpuMicrosPerDevice then $h.importCpuMicrosPerDevice / $b.importCpuMicrosPerDevice else null end),
	getDeviceRatio: ($h.getDeviceMicros / $b.getDeviceMicros)
}' | sed 's/^/RATIO /'
