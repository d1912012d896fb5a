// Package stack grows a goroutine's stack ahead of a deep call, while few frames are on
// it.
//
// A Go stack starts small and grows by copying to one twice the size, and each copy
// walks and adjusts every frame on the stack. net/http serves each connection on a
// goroutine of its own, so in a boot storm (one request per new connection) every
// connection's stack grew deep in the token handler, below the assertion check in the
// device lookup, with some forty frames to adjust (about 5 % of the storm's CPU samples,
// ≈ 30 µs per device). Grow, called where the handler begins, makes that one copy of a
// few frames.
package stack

// growBytes is Grow's frame: with the few frames below it, the stack grows to 32 KiB,
// which holds the token handler's deepest path (with a 6 KiB frame, leaving 16 KiB, the
// storm's profile showed the copy back in the device lookup).
const growBytes = 16 << 10

// Grow makes the calling goroutine's stack large enough for the token path. On a
// goroutine whose stack is already that large it costs a call and a 16 KiB clear
// (≈ 0.15 µs).
//
//go:noinline
func Grow() {
	var b [growBytes]byte
	sink(b[:])
}

// sink keeps Grow's frame from being optimized away.
//
//go:noinline
func sink([]byte) {}
