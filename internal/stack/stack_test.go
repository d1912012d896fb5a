package stack

import "testing"

// BenchmarkGrowFresh is Grow on new goroutines (its purpose); BenchmarkGrowGrown on a
// goroutine whose stack has grown already (its cost on a keep-alive connection).
func BenchmarkGrowFresh(b *testing.B) {
	for b.Loop() {
		done := make(chan struct{})
		go func() {
			Grow()
			close(done)
		}()
		<-done
	}
}

func BenchmarkGrowGrown(b *testing.B) {
	for b.Loop() {
		Grow()
	}
}
