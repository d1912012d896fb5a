// Package api holds the service contract, api/openapi.yaml, embedded so the service can
// validate requests against it and serve it at GET /openapi.yaml.
package api

import _ "embed"

// Spec is the OpenAPI document, byte for byte as committed.
//
//go:embed openapi.yaml
var Spec []byte
