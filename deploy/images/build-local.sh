#!/usr/bin/env bash
# Builds, from what this machine has, the images the tests need where no registry can
# be reached. The Dockerfiles and docker-compose.yml take them through variables and
# build arguments; nothing is edited:
#
#   baton-go-builder:local   busybox-static, the host's Go toolchain and a module cache
#                            holding this module's dependencies: builds run offline.
#                            Use: BATON_GO_IMAGE=baton-go-builder:local
#   baton-prometheus:local   Debian's prometheus package: its binary, the libraries it
#                            links and its web assets.
#                            Use: BATON_PROMETHEUS_IMAGE=baton-prometheus:local
#
# Needs: docker, go, and the Debian packages busybox-static and prometheus. With
# --install (deploy/run.sh passes it) they are installed with apt-get when missing;
# without it (make images) a missing one is an error that says so. Safe to run
# again: it replaces the images.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
install=0
[ "${1:-}" = --install ] && install=1

missing=()
for pkg in busybox-static prometheus; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ $install = 0 ]; then
    echo "build-local.sh: needs the Debian packages ${missing[*]}: apt-get install ${missing[*]} (or run with --install)" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The prometheus package starts a service on install; only its files are wanted.
  (systemctl disable --now prometheus || service prometheus stop) >/dev/null 2>&1 || true
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

busybox_rootfs() { # $1: rootfs dir
  mkdir -p "$1/bin" "$1/tmp" "$1/etc"
  chmod 1777 "$1/tmp"
  cp /bin/busybox "$1/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
  echo 'root:x:0:0:root:/tmp:/bin/sh' >"$1/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >>"$1/etc/passwd"
  echo 'hosts: files dns' >"$1/etc/nsswitch.conf"
}

echo "== baton-go-builder:local ($(go version))"
goroot=$(go env GOROOT)
b="$work/builder"
busybox_rootfs "$b"
mkdir -p "$b/usr/local" "$b/go/pkg/mod" "$b/src"
cp -a "$goroot" "$b/usr/local/go"
rm -rf "$b/usr/local/go/test" "$b/usr/local/go/doc" "$b/usr/local/go/api"
GOFLAGS=-modcacherw GOMODCACHE="$b/go/pkg/mod" go mod download -x 2>/dev/null
tar -C "$b" -c . | docker import \
  --change 'ENV PATH=/usr/local/go/bin:/bin' \
  --change 'ENV GOPATH=/go' --change 'ENV GOMODCACHE=/go/pkg/mod' \
  --change 'ENV GOPROXY=off' --change 'ENV GOFLAGS=-mod=mod' --change 'ENV GOTOOLCHAIN=local' \
  --change 'ENV GOCACHE=/tmp/go-cache' --change 'ENV HOME=/tmp' \
  --change 'WORKDIR /src' --change 'CMD ["/bin/sh"]' \
  - baton-go-builder:local >/dev/null

echo "== baton-prometheus:local ($(/usr/bin/prometheus --version 2>&1 | head -1))"
p="$work/prometheus"
busybox_rootfs "$p"
mkdir -p "$p/etc/prometheus" "$p/prometheus" "$p/usr/share/prometheus"
cp /usr/bin/prometheus "$p/bin/prometheus"
for lib in $(ldd /usr/bin/prometheus | grep -o '/[^ ]*'); do
  mkdir -p "$p$(dirname "$lib")"
  cp -L "$lib" "$p$lib"
done
cp -r /usr/share/prometheus/web "$p/usr/share/prometheus/" 2>/dev/null || true
cp "$root/deploy/prometheus/prometheus.yml" "$p/etc/prometheus/prometheus.yml"
tar -C "$p" --owner=0 --group=0 -c . | docker import \
  --change 'USER 65534:65534' \
  --change 'WORKDIR /prometheus' \
  --change 'EXPOSE 9090' \
  --change 'ENTRYPOINT ["/bin/prometheus"]' \
  --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
  - baton-prometheus:local >/dev/null
# /prometheus must be writable by the runtime user: a tiny layer on top fixes owners.
printf 'FROM baton-prometheus:local\nUSER 0\nRUN chown -R 65534:65534 /prometheus\nUSER 65534:65534\n' |
  DOCKER_BUILDKIT=0 docker build -q -t baton-prometheus:local - >/dev/null

docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E '^baton-(go-builder|prometheus):local'
