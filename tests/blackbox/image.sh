#!/usr/bin/env bash
# The runtime image of deploy/docker/build-image.sh, run with runc from its own root
# filesystem only: its binaries start (every shared library is in the image), it runs as
# uid 10001, and a one-node cluster started from it with mTLS and an admin token takes a
# message over SMTP and keeps it in the image's /var/lib/mxraft volume.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
work=$(mktemp -d)
export MXRAFT_LOCAL_DIR=$work
source "$root/tests/blackbox/lib.sh"
id="mxraft-image-test-$$"
cleanup() {
    runc kill "$id" KILL >/dev/null 2>&1 || true
    runc delete --force "$id" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail_logs=("$work/node.log")

step "build the image (umoci, no registry)"
"$root/deploy/docker/build-image.sh" --out "$work/oci" >"$work/build.log" 2>&1 ||
    { cat "$work/build.log"; fail "build-image.sh failed"; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
[[ -f $work/mxraft-$version.oci.tar ]] || fail "no image archive"

step "its configuration: uid 10001, mxraftd as the entrypoint"
umoci unpack --image "$work/oci:mxraft:$version" "$work/bundle" >/dev/null
config=$work/bundle/config.json
[[ $(jq -r '.process.user.uid' "$config") == 10001 ]] || fail "the image does not run as uid 10001"
[[ $(jq -r '.process.args | join(" ")' "$config") == "/usr/local/bin/mxraftd --config /etc/mxraft/mxraftd.toml" ]] ||
    fail "unexpected command: $(jq -c '.process.args' "$config")"

# The volume /var/lib/mxraft is a directory of the host owned by uid 10001, as a Kubernetes
# volume with fsGroup would be (umoci's own bundle puts a root-owned tmpfs there).
data=$work/data
install -d -m 0700 -o 10001 -g 10001 "$data"

# Runs the image's root filesystem with `args` (a JSON array) on the host's network.
run_in_image() {
    jq --argjson args "$1" --arg data "$data" '.process.args = $args | .process.terminal = false
        | .linux.namespaces |= map(select(.type != "network"))
        | .mounts |= map(if .destination == "/var/lib/mxraft"
            then {destination: .destination, type: "bind", source: $data, options: ["rbind", "rw"]}
            else . end)
        # What a container runtime provides: the host name servers and hosts file.
        | .mounts += [{destination: "/etc/resolv.conf", type: "bind", source: "/etc/resolv.conf",
                       options: ["rbind", "ro"]},
                      {destination: "/etc/hosts", type: "bind", source: "/etc/hosts",
                       options: ["rbind", "ro"]}]' "$config" >"$config.new"
    mv "$config.new" "$config"
}

step "both binaries start inside the image"
for bin in mxraftd mxraftctl; do
    run_in_image "[\"/usr/local/bin/$bin\", \"--version\"]"
    out=$(runc run --bundle "$work/bundle" "$id" 2>&1) || fail "$bin --version in the image: $out"
    [[ $out == "$bin $version" ]] || fail "$bin --version printed: $out"
    runc delete --force "$id" >/dev/null 2>&1 || true
done

step "a one-node cluster in the image takes a message"
ctl="$target/release/mxraftctl"
etc=$work/bundle/rootfs/etc/mxraft
"$ctl" cert create-ca --out-dir "$work/ca" >/dev/null
"$ctl" cert create-node --id 1 --ip 127.0.0.1 --ca-dir "$work/ca" --out-dir "$etc" >/dev/null
cp "$work/ca/ca.pem" "$etc/"
"$ctl" token create "$etc/admin.token" >/dev/null
cat >"$etc/mxraftd.toml" <<TOML
[node]
id = 1
data_dir = "/var/lib/mxraft"

[smtp]
listen = "127.0.0.1:0"
hostname = "image.mxraft.test"

[tls]
ca_file = "/etc/mxraft/ca.pem"
cert_file = "/etc/mxraft/node1.pem"
key_file = "/etc/mxraft/node1-key.pem"

[admin]
listen = "127.0.0.1:0"
token_files = [{ path = "/etc/mxraft/admin.token", role = "admin" }]

[cluster]
listen = "127.0.0.1:0"
bootstrap = true

[[domains]]
name = "example.test"
primary = "127.0.0.1:9"
recipients = "any"
TOML
chown -R 10001:10001 "$etc"
run_in_image '["/usr/local/bin/mxraftd", "--config", "/etc/mxraft/mxraftd.toml"]'
runc run --bundle "$work/bundle" "$id" >"$work/node.log" 2>&1 &
for _ in $(seq 1 300); do
    grep -q 'SMTP accepting' "$work/node.log" && break
    sleep 0.1
done
grep -q 'SMTP accepting' "$work/node.log" || fail "the node in the image did not start"
smtp=$(grep -o 'smtp=127\.0\.0\.1:[0-9]*' "$work/node.log" | head -n 1 | cut -d: -f2)
out=$(swaks --server 127.0.0.1 --port "$smtp" --from sender@elsewhere.test --to user@example.test \
    --body "from the image" 2>&1) || fail "swaks to the node in the image: $out"
grep -q '^<-  250 2.0.0 Ok: queued as' <<<"$out" || fail "no 250 after the dot: $out"
[[ -d $data/raft && -d $data/sm ]] || fail "nothing written to the /var/lib/mxraft volume"
[[ $(stat -c %u "$data/raft") == 10001 ]] || fail "the node's files are not owned by uid 10001"

echo "PASS: image ($(du -sh "$work/oci" | cut -f1))"
