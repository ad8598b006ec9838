#!/usr/bin/env bash
# Proves that a fresh Debian machine passes: debootstraps a minimal Debian 12 root, and in it
# runs scripts/install-deps.sh --test and the black-box tests of deploy/local against the
# binaries already built in $CARGO_TARGET_DIR (build them first: cargo build --release -p
# mxraftd -p mxraftctl).
#
# The root has only Debian's minbase: no compiler, no Perl modules, no Postfix, no Python.
# What it is given from this machine is what every new machine of this kind comes with: the
# Rust toolchains installed by rustup and Go in /usr/local/go (bound at the same paths), its
# own CA certificates (copied), plus
# this checkout and the target directory (bound at the same paths; deploy/local/up.sh is told,
# with MXRAFT_PREBUILT=1, to use the binaries there as they are). Its cargo home and Go caches
# are new, so cargo-fuzz and grpcurl are fetched and built again.
#
#   tests/fresh-machine.sh [--keep]     --keep leaves the root in $MXRAFT_FRESH_ROOT for a rerun
#
# Needs root. Not run by tests/run.sh (it takes 10-20 minutes and installs ~1 GiB into the root);
# docs/operations.md, "Testing", says when to run it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
fresh=${MXRAFT_FRESH_ROOT:-/var/tmp/mxraft-fresh-root}
keep=0
[[ "${1:-}" == "--keep" ]] && keep=1
start=$SECONDS

say() { echo "=== fresh-machine: $* ($((SECONDS - start)) s)"; }

[[ $(id -u) -eq 0 ]] || { echo "fresh-machine: run as root (debootstrap, mount, chroot)" >&2; exit 1; }
for b in mxraftd mxraftctl; do
    [[ -x $CARGO_TARGET_DIR/release/$b ]] || { echo "fresh-machine: build first: $CARGO_TARGET_DIR/release/$b is missing" >&2; exit 1; }
done
[[ -d $rustup_home/toolchains ]] || { echo "fresh-machine: no rustup toolchains in $rustup_home" >&2; exit 1; }

mounted() { awk -v p="$fresh/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r; }
unmount_all() {
    local m
    for m in $(mounted); do umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
    # Kill whatever the tests left running inside the root, then unmount; the root is removed
    # only once nothing is mounted in it (the checkout and target directory are bound there).
    local pid
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$fresh" ]] && kill -9 "$pid" 2>/dev/null || true
    done
    unmount_all
    if ((keep == 0)) && [[ -z $(mounted) ]]; then
        rm -rf --one-file-system "$fresh"
    fi
}
trap cleanup EXIT

if [[ ! -x $fresh/bin/bash ]]; then
    command -v debootstrap >/dev/null 2>&1 || {
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
    }
    say "debootstrap --variant=minbase bookworm $fresh"
    rm -rf --one-file-system "$fresh"
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    debootstrap --variant=minbase bookworm "$fresh" "${mirror:-http://deb.debian.org/debian}" >"$fresh.debootstrap.log" 2>&1 ||
        { tail -n 20 "$fresh.debootstrap.log"; exit 1; }
fi

[[ -z $(mounted) ]] || { echo "fresh-machine: something is still mounted in $fresh" >&2; exit 1; }
# Nothing is mounted yet, so this removes only what an earlier --keep run left in the root.
rm -rf "$fresh/root/.cargo" "$fresh/root/.cache" "$fresh/root/go"

say "binding /proc, /sys, /dev, the checkout, the target directory, rustup's toolchains and Go"
cp /etc/resolv.conf "$fresh/etc/resolv.conf"
# The machine's own CA certificates (those it trusts beyond Debian's), as every machine of
# this kind has them, so HTTPS to the package registries works as it does outside.
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    mkdir -p "$fresh/usr/local/share/ca-certificates" "$fresh/etc/ssl/certs"
    cp /usr/local/share/ca-certificates/* "$fresh/usr/local/share/ca-certificates/"
    cp /etc/ssl/certs/ca-certificates.crt "$fresh/etc/ssl/certs/ca-certificates.crt"
fi
mount -t proc proc "$fresh/proc"
mount -t sysfs sys "$fresh/sys"
mount --rbind /dev "$fresh/dev"
mount -t tmpfs tmpfs "$fresh/tmp"
go_root=$(dirname "$(dirname "$(readlink -f "$(command -v go)")")")
for d in "$repo" "$CARGO_TARGET_DIR" "$rustup_home" "$go_root"; do
    mkdir -p "$fresh$d"
    mount --bind "$d" "$fresh$d"
done
# A new cargo home with only rustup's proxies, as a machine with Rust and nothing else has.
cargo_home=$fresh/root/.cargo
mkdir -p "$cargo_home/bin"
cp "$(command -v rustup)" "$cargo_home/bin/rustup"
for tool in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
    ln -s rustup "$cargo_home/bin/$tool"
done

in_root() {
    chroot "$fresh" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/root/.cargo/bin:$go_root/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        RUSTUP_HOME="$rustup_home" CARGO_TARGET_DIR="$CARGO_TARGET_DIR" MXRAFT_PREBUILT=1 \
        SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        bash -c "cd '$repo' && $1"
}

say "what the fresh root lacks before the install"
in_root 'for c in cc clang swaks smtp-sink dnsmasq python3 jq curl; do command -v $c >/dev/null || echo "  no $c"; done;
         perl -MNet::SSLeay -e1 2>/dev/null || echo "  no Net::SSLeay"; cargo fuzz --version 2>/dev/null || echo "  no cargo-fuzz"'

say "scripts/install-deps.sh --test"
in_root 'apt-get update -q >/dev/null && scripts/install-deps.sh --test'

say "the binaries run in the fresh root"
in_root '"$CARGO_TARGET_DIR/release/mxraftd" --version && "$CARGO_TARGET_DIR/release/mxraftctl" --version'

for t in local_cluster flush front_door security; do
    say "tests/blackbox/$t.sh"
    in_root "tests/blackbox/$t.sh"
done
say "passed: a fresh Debian root installs what the suite needs and passes the black-box tests"
