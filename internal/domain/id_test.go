package domain_test

import (
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
)

func TestValidID(t *testing.T) {
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		id   string
		want bool
	}{
		{"sensor-0001", true},
		{"Dev.With:Colons@site=7$x", true},
		{"paren(1)*star!quote'", true},
		{"MiXeD", true},
		{string(long[:128]), true},
		{string(long), false},
		{"", false},
		{"has space", false},
		{"slash/inside", false},
		{"hash#", false},
		{"amp&", false},
		{"ümlaut", false},
		{"new\nline", false},
	}
	for _, tt := range tests {
		if got := domain.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q): got %v, want %v", tt.id, got, tt.want)
		}
	}
}
