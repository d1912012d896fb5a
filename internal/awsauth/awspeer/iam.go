package awspeer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// A small evaluator of the AWS IoT policies an authorizer returns: statements with
// Effect Allow or Deny, Action and Resource as a string or a list, resources with the
// wildcards * and ? — enough for the documents awsauth emits, strict about the rest.

type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("must be a string or a list of strings")
	}
	*l = many
	return nil
}

type statement struct {
	Effect   string     `json:"Effect"`
	Action   stringList `json:"Action"`
	Resource stringList `json:"Resource"`
}

type statements []statement

func (s *statements) UnmarshalJSON(b []byte) error {
	var one statement
	if err := json.Unmarshal(b, &one); err == nil && one.Effect != "" {
		*s = []statement{one}
		return nil
	}
	var many []statement
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

// Policy is the union of a connection's policy documents.
type Policy struct{ st []statement }

// ParsePolicies parses the policy documents of an authorizer response (JSON strings).
func ParsePolicies(docs []string) (Policy, error) {
	var p Policy
	for i, d := range docs {
		var doc struct {
			Version   string     `json:"Version"`
			Statement statements `json:"Statement"`
		}
		dec := json.NewDecoder(strings.NewReader(d))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc); err != nil {
			return Policy{}, fmt.Errorf("policy document %d: %v", i, err)
		}
		if doc.Version != "2012-10-17" {
			return Policy{}, fmt.Errorf("policy document %d: Version %q", i, doc.Version)
		}
		for _, s := range doc.Statement {
			if s.Effect != "Allow" && s.Effect != "Deny" {
				return Policy{}, fmt.Errorf("policy document %d: Effect %q", i, s.Effect)
			}
			if len(s.Action) == 0 || len(s.Resource) == 0 {
				return Policy{}, fmt.Errorf("policy document %d: a statement without Action or Resource", i)
			}
		}
		p.st = append(p.st, doc.Statement...)
	}
	return p, nil
}

// Allowed reports whether action on resource is allowed: some Allow matches and no
// Deny does.
func (p Policy) Allowed(action, resource string) bool {
	allowed := false
	for _, s := range p.st {
		if !matchAny(s.Action, action) || !matchAny(s.Resource, resource) {
			continue
		}
		if s.Effect == "Deny" {
			return false
		}
		allowed = true
	}
	return allowed
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if glob(p, s) {
			return true
		}
	}
	return false
}

// glob matches s against an IAM pattern: * any run of characters (slashes included),
// ? any one character, everything else literally.
func glob(p, s string) bool {
	// path.Match's * stops at /; IAM's does not. Split the pattern on * and match the
	// pieces in order, each with ? as a one-character wildcard.
	parts := strings.Split(p, "*")
	if len(parts) == 1 {
		return len(p) == len(s) && piece(p, s)
	}
	if len(s) < len(parts[0]) || !piece(parts[0], s[:len(parts[0])]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return len(s) >= len(last) && piece(last, s[len(s)-len(last):])
}

// piece matches equal-length p and s, ? matching any one character.
func piece(p, s string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '?' && p[i] != s[i] {
			return false
		}
	}
	return true
}

// index finds the first place pattern piece p matches in s.
func index(s, p string) int {
	for i := 0; i+len(p) <= len(s); i++ {
		if piece(p, s[i:i+len(p)]) {
			return i
		}
	}
	return -1
}
