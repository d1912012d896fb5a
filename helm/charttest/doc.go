// Package charttest holds the offline tests of the tokensvc Helm chart (../tokensvc):
// they load the chart with Helm's own Go packages, check values against its schema,
// render it with the default values and every ci/*-values.yaml file, lint it, decode
// every rendered object strictly into the Kubernetes API types, compare the output with
// golden files under testdata/, and assert the Deployment's security properties. No helm
// binary and no cluster are needed.
//
// It is a module of its own so that Helm and the Kubernetes API types stay out of the
// service's go.mod. Run from this directory:
//
//	go test ./...            # check
//	go test ./... -update    # rewrite testdata/*.golden.yaml after an intended change
package charttest
