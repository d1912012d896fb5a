// Package oapiserver is generated from api/openapi.yaml: the chi router and the strict
// server interface, over the models of package oapi. Do not edit oapiserver.gen.go;
// change the spec and run `go generate ./...`.
package oapiserver

//go:generate go tool oapi-codegen -config oapiserver.cfg.yaml ../../../api/openapi.yaml
