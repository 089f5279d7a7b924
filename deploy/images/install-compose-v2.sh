#!/usr/bin/env bash
# Installs Docker Compose v2 as a docker CLI plugin (`docker compose`) when the
# machine has none, building it from the Go module proxy: this project's CI machine
# has Debian's docker-compose 1.29 but no v2 and no other way to get it.
# Idempotent: does nothing if `docker compose version` works.
set -euo pipefail
version=${COMPOSE_VERSION:-v2.40.3}
if docker compose version >/dev/null 2>&1; then
  docker compose version
  exit 0
fi
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
echo "building docker compose $version from the Go module proxy (a few minutes)"
# Built inside its own module: its go.mod has exclude and replace directives that
# `go install pkg@version` refuses.
src=$(go mod download -json "github.com/docker/compose/v2@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$src" "$work/compose"
chmod -R u+w "$work/compose"
(cd "$work/compose" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
  -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" -o "$work/docker-compose" ./cmd)
mkdir -p "$plugins"
install -m 0755 "$work/docker-compose" "$plugins/docker-compose"
docker compose version
