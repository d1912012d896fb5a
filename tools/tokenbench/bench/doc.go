// Package bench is what tokenbench's benchmarks share: one flag and configuration
// shape (Common, Phases), one phase runner (RunWorkers: N workers for a duration or a
// request count, Retry-After honoured, latencies tallied per worker and summarized with
// nearest-rank percentiles), the clients and the loopback rule, device assertions
// (HS256 and ES256), provisioning through the generated operator API client, the bare
// baseline handler, and the CPU, memory and metrics measurements around a phase.
//
// Every target is on this machine: URLs are checked to be loopback before anything runs.
package bench
