#!/usr/bin/env bash
# Builds the local image the Docker launcher's tests run, kairos-test/busybox:latest, when it is
# missing or older than this script's recipe. No registry is reachable from the test machines, so
# the image is imported from a root directory holding Debian's static busybox and its applet links.
# Idempotent: a second run finds the image and exits at once.
set -euo pipefail

IMAGE=kairos-test/busybox:latest
# Bumped whenever the applet list changes, so that an image built from an older list is rebuilt.
RECIPE=2
APPLETS=(sh echo sleep cat true false env ls head yes printf tr wc id kill test mkdir rm touch)

if ! docker info > /dev/null 2>&1; then
    echo "docker_image.sh: the Docker engine does not answer (is dockerd running?)" >&2
    exit 1
fi

current=$(docker image inspect --format '{{ index .Config.Labels "kairos.test-image" }}' "$IMAGE" 2> /dev/null || true)
if [ "$current" = "$RECIPE" ]; then
    exit 0
fi
old_id=$(docker image inspect --format '{{ .Id }}' "$IMAGE" 2> /dev/null || true)

# The image has no libc, so busybox must be the static build (Debian's busybox package is dynamic).
if [ ! -x /bin/busybox ] || ldd /bin/busybox > /dev/null 2>&1; then
    # The package lists may be missing on a new machine; refresh them only when the install needs it.
    apt-get install -y busybox-static > /dev/null 2>&1 ||
        { apt-get update > /dev/null && apt-get install -y busybox-static > /dev/null; }
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
cp /bin/busybox "$root/bin/busybox"
for applet in "${APPLETS[@]}"; do
    ln -s busybox "$root/bin/$applet"
done
chmod 1777 "$root/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"

tar -C "$root" -cf - . | docker import \
    --change "LABEL kairos.test-image=$RECIPE" \
    --change 'ENV PATH=/bin' \
    - "$IMAGE" > /dev/null
# The replaced image is dropped unless a container still uses it.
if [ -n "$old_id" ]; then
    docker rmi "$old_id" > /dev/null 2>&1 || true
fi
echo "docker_image.sh: built $IMAGE"
