package httpapi

// growStackBytes is the frame growStack takes: enough that a request's goroutine stack
// is grown once to the size the token path needs (32 KiB: the chain of middleware, the
// assertion check with the device read below it, the issuer and its profiles), not
// repeatedly while deep in it.
const growStackBytes = 16 << 10

// growStack makes the goroutine's stack large enough for the handler while few frames
// are on it. A Go stack grows by copying, and each copy adjusts every frame on the
// stack: on a new connection's goroutine (a boot storm: one request per connection)
// the token path used to grow it deep in the device lookup, where that copy cost
// about 30 µs per request. On a goroutine whose stack is already large (keep-alive)
// this is a call and a 16 KiB clear.
//
//go:noinline
func growStack() {
	var b [growStackBytes]byte
	stackSink(b[:])
}

// stackSink keeps growStack's frame from being optimized away.
//
//go:noinline
func stackSink([]byte) {}
