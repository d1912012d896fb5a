// Package oapi is generated from api/openapi.yaml: the models, the chi strict server
// interface and the typed client. Do not edit oapi.gen.go; change the spec and run
// `go generate ./...`.
package oapi

//go:generate go tool oapi-codegen -config oapi.cfg.yaml ../../api/openapi.yaml
