#!/usr/bin/env bash
# Builds the mxraft runtime image on this machine, without Docker or a registry: the release
# binaries (stripped) and the shared libraries they link, a non-root user (uid 10001) and an
# empty /var/lib/mxraft, as one OCI layer written with umoci. The image is the same one
# deploy/docker/Dockerfile builds for users with a registry.
#
#   deploy/docker/build-image.sh [--out DIR] [--import]
#
# Writes the OCI layout to DIR (default ~/.cache/mxraft/image/oci) tagged mxraft:<version>,
# and an archive of it next to the layout (mxraft-<version>.oci.tar). --import loads the
# archive into containerd's k8s.io namespace (ctr images import), where a kubelet finds it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
out=$HOME/.cache/mxraft/image/oci
import=0
while (($#)); do
    case $1 in
        --out) out=$2; shift 2 ;;
        --import) import=1; shift ;;
        *) echo "build-image: unknown option $1" >&2; exit 2 ;;
    esac
done
say() { echo "build-image: $*" >&2; }
for tool in umoci strip ldd; do
    command -v "$tool" >/dev/null || { say "$tool not found (apt-get install umoci binutils)"; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
tag="mxraft:$version"
if [[ ! -x $target/release/mxraftd || ! -x $target/release/mxraftctl ]]; then
    say "building the release binaries"
    (cd "$root" && cargo build --release --locked -p mxraftd -p mxraftctl)
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
rootfs=$stage/rootfs
mkdir -p "$rootfs"/{usr/local/bin,etc/mxraft,var/lib/mxraft,tmp}
chmod 1777 "$rootfs/tmp"
for bin in mxraftd mxraftctl; do
    strip -o "$rootfs/usr/local/bin/$bin" "$target/release/$bin"
    # Each shared library at the path the dynamic loader looks for it.
    ldd "$target/release/$bin" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
        [[ -n $lib && -e $lib ]] || continue
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
done
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/usr/sbin/nologin
mxraft:x:10001:10001:mxraft:/var/lib/mxraft:/usr/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
mxraft:x:10001:
GROUP
echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"
chown 10001:10001 "$rootfs/var/lib/mxraft"
chmod 0700 "$rootfs/var/lib/mxraft"

rm -rf "$out"
mkdir -p "$(dirname "$out")"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci insert --image "$out:$tag" --history.created_by "deploy/docker/build-image.sh" "$rootfs" /
umoci config --image "$out:$tag" \
    --config.user 10001:10001 \
    --config.entrypoint /usr/local/bin/mxraftd \
    --config.cmd --config --config.cmd /etc/mxraft/mxraftd.toml \
    --config.workingdir /var/lib/mxraft \
    --config.volume /var/lib/mxraft \
    --config.exposedports 25/tcp --config.exposedports 7001/tcp \
    --config.exposedports 7100/tcp --config.exposedports 9100/tcp \
    --config.env PATH=/usr/local/bin \
    --config.label "org.opencontainers.image.title=mxraft" \
    --config.label "org.opencontainers.image.version=$version"
# A second name, the bare tag, for importers that prepend the repository
# (ctr images import --base-name docker.io/library/mxraft).
umoci tag --image "$out:$tag" "$version"
umoci gc --layout "$out"
archive="$(dirname "$out")/mxraft-$version.oci.tar"
tar -C "$out" -cf "$archive" .
say "$tag in $out ($(du -sh "$out" | cut -f1)); archive $archive"

if ((import)); then
    command -v ctr >/dev/null || { say "ctr not found (apt-get install containerd)"; exit 1; }
    # The kubelet asks for the normalized name, docker.io/library/mxraft:<version>.
    ctr -n k8s.io images import --base-name docker.io/library/mxraft "$archive"
    say "imported into containerd (namespace k8s.io)"
fi
