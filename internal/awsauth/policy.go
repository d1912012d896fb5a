package awsauth

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tokensvc/tokensvc/internal/target/awsiot"
)

// AWS IoT Core's limits on an authorizer's policy documents.
const (
	maxPolicyDocs  = 10
	maxPolicyChars = 2048
)

// Statement is one statement of an AWS IoT policy.
type Statement struct {
	Effect   string `json:"Effect"`
	Action   string `json:"Action"`
	Resource string `json:"Resource"`
}

// Policy is an AWS IoT policy document.
type Policy struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// PolicyVersion is the IAM policy language version AWS IoT policies use.
const PolicyVersion = "2012-10-17"

// Statements returns what device id may do under c: connect with client ID id,
// publish to its telemetry topic, subscribe to its topic filters and receive what they
// match.
func (c Config) Statements(id string) []Statement {
	arn := "arn:aws:iot:" + c.Region + ":" + c.AccountID + ":"
	allow := func(action, resource string) Statement {
		return Statement{Effect: "Allow", Action: action, Resource: arn + resource}
	}
	st := []Statement{
		allow("iot:Connect", "client/"+id),
		allow("iot:Publish", "topic/"+awsiot.Topic(c.TopicTemplate, id)),
	}
	for _, t := range c.SubscribeTemplates {
		f := awsiot.Topic(t, id)
		st = append(st, allow("iot:Subscribe", "topicfilter/"+f))
		// Receive is checked against topic names: the filter's MQTT wildcards become
		// the policy's *. A trailing # also matches its parent level.
		levels := strings.Split(f, "/")
		for i, l := range levels {
			if l == "+" || l == "#" {
				levels[i] = "*"
			}
		}
		st = append(st, allow("iot:Receive", "topic/"+strings.Join(levels, "/")))
		if parent, ok := strings.CutSuffix(f, "/#"); ok && !strings.Contains(parent, "+") {
			st = append(st, allow("iot:Receive", "topic/"+parent))
		}
	}
	return st
}

// PolicyDocuments packs statements into as few documents as AWS's 2,048-character
// limit allows; more than 10 documents is an error.
func PolicyDocuments(st []Statement) ([]string, error) {
	var docs []string
	var cur []Statement
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		b, err := json.Marshal(Policy{Version: PolicyVersion, Statement: cur})
		if err != nil {
			return err
		}
		docs = append(docs, string(b))
		cur = nil
		return nil
	}
	size := func(s []Statement) int {
		b, _ := json.Marshal(Policy{Version: PolicyVersion, Statement: s})
		return len(b)
	}
	for _, s := range st {
		if size(append(cur, s)) > maxPolicyChars {
			if err := flush(); err != nil {
				return nil, err
			}
			if size([]Statement{s}) > maxPolicyChars {
				return nil, fmt.Errorf("a policy statement exceeds %d characters", maxPolicyChars)
			}
		}
		cur = append(cur, s)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(docs) > maxPolicyDocs {
		return nil, fmt.Errorf("the policy needs %d documents; AWS takes at most %d", len(docs), maxPolicyDocs)
	}
	return docs, nil
}

// PrincipalID returns the principalId for device id: the ID itself when it is 1 to
// 128 ASCII letters and digits (AWS's rule), else "h" and the hex SHA-256 of the ID —
// stable, distinct per device, and free of the characters AWS refuses there.
func PrincipalID(id string) string {
	if alnum(id) && len(id) <= 128 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:])
}

func alnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// clamp bounds n to [lo, hi].
func clamp(n, lo, hi int) int { return max(lo, min(n, hi)) }
