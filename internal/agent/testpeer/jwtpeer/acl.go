package jwtpeer

import (
	"errors"
	"strings"
)

// ACL is an EMQX-style acl claim: {"pub": [filters], "sub": [filters], "all": [filters]}.
// A client may publish to a topic one of pub or all matches, and subscribe to a filter
// one of sub or all covers.
type ACL struct {
	Pub, Sub, All []string
}

var errACL = errors.New(`acl claim: want an object of "pub", "sub" and "all" arrays of topic filters`)

// parseACL reads the acl claim's JSON value.
func parseACL(v any) (*ACL, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errACL
	}
	a := &ACL{}
	for k, raw := range m {
		list, ok := raw.([]any)
		if !ok {
			return nil, errACL
		}
		var dst *[]string
		switch k {
		case "pub":
			dst = &a.Pub
		case "sub":
			dst = &a.Sub
		case "all":
			dst = &a.All
		default:
			return nil, errACL
		}
		for _, f := range list {
			s, ok := f.(string)
			if !ok || s == "" {
				return nil, errACL
			}
			*dst = append(*dst, s)
		}
	}
	return a, nil
}

// Allows reports whether the ACL lets a client publish to topic (write) or subscribe
// to the filter topic (!write).
func (a *ACL) Allows(topic string, write bool) bool {
	rules := a.Sub
	if write {
		rules = a.Pub
	}
	for _, r := range [][]string{rules, a.All} {
		for _, f := range r {
			if covers(f, topic) {
				return true
			}
		}
	}
	return false
}

// covers reports whether every topic the filter f matches is also matched by rule; for
// a topic name (no wildcards) that is simply whether rule matches it.
func covers(rule, f string) bool {
	rl, fl := strings.Split(rule, "/"), strings.Split(f, "/")
	for i, r := range rl {
		if r == "#" {
			return true
		}
		if i >= len(fl) {
			return false
		}
		switch {
		case fl[i] == "#":
			return false // the filter reaches deeper than the rule allows
		case r == "+":
			continue
		case fl[i] == "+" || fl[i] != r:
			return false
		}
	}
	return len(fl) == len(rl)
}
