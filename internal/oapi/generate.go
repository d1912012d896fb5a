// Package oapi is generated from api/openapi.yaml: the models and the typed client. The
// chi strict server is in package oapiserver, so clients such as the device agent do
// not link server code. Do not edit oapi.gen.go; change the spec and run
// `go generate ./...`.
package oapi

//go:generate go tool oapi-codegen -config oapi.cfg.yaml ../../api/openapi.yaml
