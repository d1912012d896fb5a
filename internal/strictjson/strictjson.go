// Package strictjson holds JSON documents to one reading: exactly one value, no
// duplicate object keys, bounded nesting. Lenient parsers disagree on such inputs (first
// key wins here, last key there), and a document one reader validated must not be
// stored as another reader understood it.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Check accepts exactly one JSON value without duplicate keys in any object, nested
// at most MaxDepth levels. Its errors are written for clients and never quote values.
func Check(b []byte) error {
	if !json.Valid(b) {
		return errors.New("request body is not a single valid JSON value")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return walkJSON(dec, 0)
}

// MaxDepth is how deeply Check lets values nest.
const MaxDepth = 64

func walkJSON(dec *json.Decoder, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("request body nests deeper than %d levels", MaxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return errors.New("request body is not valid JSON")
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return errors.New("request body is not valid JSON")
			}
			key, _ := k.(string)
			if seen[key] {
				return fmt.Errorf("request body repeats the key %q", key)
			}
			seen[key] = true
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
	case json.Delim('['):
		for dec.More() {
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
	}
	if err != nil {
		return errors.New("request body is not valid JSON")
	}
	return nil
}
