package main

import (
	"errors"
	"syscall"
)

// isConnRefused reports whether err is a refused TCP connection (nobody listening).
func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
