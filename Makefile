# The two commands a newcomer needs: `make run` and `make test`.
GO ?= go
FUZZTIME ?= 50000x

.PHONY: run test check generate fuzz bench bench-compare bench-load bench-storm bench-vault bench-import bench-replay build vault image

## run: start tokensvc on :8080 with the embedded store in ./data
run:
	$(GO) run ./cmd/tokensvc

## test: everything CI checks — formatting, vet, generated code and go.mod freshness,
## the race-enabled test suite against a real Vault dev server (built once from the Go
## module proxy and cached, see tools/vault), a real redis-server (Debian's, installed by
## scripts/redis.sh when missing) and real MQTT/AMQP peers (the AMQP one from npm), the
## Helm chart tests, and a short run of every fuzz target
test: check
	bash scripts/agent-test-deps.sh
	bin=$$(bash scripts/vault.sh) && redis=$$(bash scripts/redis.sh) && \
	  TOKENSVC_VAULT_BIN="$$bin" TOKENSVC_REDIS_BIN="$$redis" $(GO) test -race -count=1 ./...
	bash scripts/helm-test.sh
	$(MAKE) fuzz

## vault: build (once) and print the Vault server binary the tests use
vault:
	@bash scripts/vault.sh

## check: static checks only
check:
	@bash scripts/check.sh

## generate: regenerate code from api/openapi.yaml
generate:
	$(GO) generate ./...

## fuzz: run every fuzz target for FUZZTIME each (an iteration count by default: time-
## boxed runs can fail spuriously with "context deadline exceeded" as the time runs out)
fuzz:
	@bash scripts/fuzz.sh $(FUZZTIME)

## bench: the hot-path benchmarks: SAS signing, minting per token kind, assertion
## verification per algorithm, the whole GET /token handler
bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./internal/signer ./internal/tokens ./internal/deviceauth ./internal/httpapi

## bench-compare: the regression guard: `make bench-compare BASE=<rev> [NEW=<rev>]`
## compares BASE with NEW (default: the working tree) on this machine in one run: the
## benchmarks of `make bench` through benchstat (COUNT=6 rounds, alternating), then the
## keep-alive and storm scripts on both back to back, and a table (BENCHMARKS.md)
bench-compare:
	BASE="$(BASE)" NEW="$(NEW)" bash scripts/bench-compare.sh

## image: the service's container image (needs a Docker engine; none on the CI machines)
image:
	docker build -t tokensvc:dev .

## bench-load: GET /token side by side with a bare net/http baseline on loopback (BENCHMARKS.md)
bench-load:
	bash scripts/bench-token.sh

## bench-storm: boot storm, 50,000 ES256 devices each on a new TLS connection (BENCHMARKS.md)
bench-storm:
	bash scripts/bench-storm.sh

## bench-vault: the Vault store (KV cache, Transit) against Vault's own transit/hmac (BENCHMARKS.md)
bench-vault:
	bash scripts/bench-vault.sh

## bench-import: devices/s of one streaming bulk import, workers=1 against parallel (STORE=vault for Vault)
bench-import:
	bash scripts/bench-import.sh

## bench-replay: keep-alive load and boot storm with the shared replay store (a local
## redis-server) beside per-process replay memory, one run, and the replay store's
## commands per GET /token (BENCHMARKS.md)
bench-replay:
	bash scripts/bench-replay.sh

## build: the static binaries of the products in ./bin (tokensvc, tokenagent, tokenctl;
## the load tool of tools/tokenbench is built by the bench-* targets)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/tokensvc ./cmd/tokenagent ./cmd/tokenctl
