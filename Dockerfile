# syntax=docker/dockerfile:1
#
# tokensvc container image: a static Go binary on distroless "static" as the nonroot
# user (UID/GID 65532), listening on 8080. No shell, no package manager, no libc.
#
#   docker build -t tokensvc:dev .          # or: make image
#
# The Helm chart (helm/tokensvc) runs it with a read-only root filesystem, all
# capabilities dropped and runAsUser 65532; helm/charttest checks that this file and the
# chart agree on the user and the port.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# CGO off: a static binary that needs no libc. -trimpath: no build paths in the binary.
# -buildvcs=false: .git is not in the build context (.dockerignore is an allow-list).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags="-s -w" -o /out/tokensvc ./cmd/tokensvc
# The embedded store's default data directory, owned by the nonroot user, for running the
# image without a mounted volume (docker run); Kubernetes mounts a volume here.
RUN mkdir -p /out/data && chown 65532:65532 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tokensvc /usr/local/bin/tokensvc
COPY --from=build --chown=65532:65532 /out/data /var/lib/tokensvc
ENV TOKENSVC_DATA_DIR=/var/lib/tokensvc
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tokensvc"]
