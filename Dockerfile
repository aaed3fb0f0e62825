# One image for every role: /kvinject-webhook and /kvinject-cache (the servers, each linking only
# what it serves), /kvinject (the user's command, every role, the entrypoint),
# /kvinject-agent (the init container it injects: its own small binary, no Kubernetes client code),
# /kvinject-exec (the env variables' exec wrapper) and /kvinject-credential-provider (copied onto
# nodes for the kubelet). The same binaries as `make image` (test/hygiene checks it). Build:
#   docker build --build-arg VERSION=v0.1.0 -t kvinject:v0.1.0 .
# Without Docker (local test cluster): `make image` (test/cluster/tools mkimage, same layout).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ ./cmd/kvinject ./cmd/kvinject-webhook ./cmd/kvinject-cache ./cmd/kvinject-agent ./cmd/kvinject-exec ./cmd/kvinject-credential-provider

# Static binary, CA certificates (Entra ID, Key Vault), user 65532 (nonroot), no shell.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/kvinject /kvinject
COPY --from=build /out/kvinject-webhook /kvinject-webhook
COPY --from=build /out/kvinject-cache /kvinject-cache
COPY --from=build /out/kvinject-agent /kvinject-agent
# The exec wrapper the agent copies into pods that get env variables without EnvFiles.
COPY --from=build /out/kvinject-exec /kvinject-exec
COPY --from=build /out/kvinject-credential-provider /kvinject-credential-provider
USER 65532:65532
ENTRYPOINT ["/kvinject"]
