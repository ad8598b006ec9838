#!/usr/bin/env bash
# The chart on a real Kubernetes 1.34 control plane, in a network namespace of its own:
# etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager, kube-scheduler, one
# node (kubelet with Debian's containerd and runc, cgroupfs, the CNI bridge plugin, kube-proxy
# in nftables mode) and CoreDNS for the pods' names. The Kubernetes binaries come from
# tests/k8s/kube.sh (built once into ~/.cache/mxraft/kube), the image from
# deploy/docker/build-image.sh, loaded into containerd without a registry.
#
# Scenarios: helm install -> three pods ready, one cluster of three voters; mail sent to the
# SMTP Service is queued on every node; the leader's pod deleted -> a new leader, nothing lost,
# the pod comes back and catches up; helm upgrade with a changed config rolls the pods one at
# a time while mail keeps being accepted; scale 3 -> 5 -> 3 ends with the right membership;
# pod 0's PVC deleted -> pod 0 starts no second cluster and waits, and rejoins once removed.
#
# Needs root. Run by tests/run.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$root/tests/k8s
target=${CARGO_TARGET_DIR:-$HOME/.cache/mxraft/target}
start=$SECONDS
say() { echo "k8s [$((SECONDS - start)) s]: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

kube=$("$here/kube.sh")
helm=$HOME/.cache/mxraft/bin/helm
ctl=$target/release/mxraftctl
[[ -x $helm ]] || fail "$helm is missing (scripts/install-deps.sh --test)"
for tool in containerd ctr runc etcd nsenter umoci nft; do
    command -v "$tool" >/dev/null || fail "$tool not found (scripts/install-deps.sh --test)"
done

work=$(mktemp -d /tmp/mxraft-k8s.XXXXXX)
ns=mxk8s$$
node=mxk8s
node_ip=10.201.0.1
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
pids=()
netns_before=$(ls /var/run/netns 2>/dev/null || true)

in_ns() { nsenter --net="/var/run/netns/$ns" "$@"; }
kc() { in_ns "$kube/kubectl" --kubeconfig "$work/admin.kubeconfig" "$@"; }
hm() { in_ns "$helm" --kubeconfig "$work/admin.kubeconfig" "$@"; }
# mxraftctl in a pod, against that pod's own node (the pod sets the CA, token and endpoint).
ctl_in() { local pod=$1; shift; kc -n mail exec "$pod" -c mxraftd -- mxraftctl "$@"; }

cleanup() {
    local rc=$?
    set +e
    if ((rc != 0)) && [[ -f $work/admin.kubeconfig ]]; then
        kc get pods -A -o wide >&2
        for p in $(kc -n mail get pods -o name 2>/dev/null); do
            echo "--- $p" >&2
            kc -n mail logs "$p" -c mxraftd --tail 30 >&2
        done
        tail -n 20 "$work"/logs/kubelet.log >&2
    fi
    # The pods' processes first (they run under containerd's shims), then the control plane.
    for id in $(runc --root "$work/runc/k8s.io" list -q 2>/dev/null); do
        runc --root "$work/runc/k8s.io" kill -a "$id" KILL 2>/dev/null
    done
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null; done
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        for _ in $(seq 50); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
        kill -9 "${pids[i]}" 2>/dev/null
        wait "${pids[i]}" 2>/dev/null
    done
    pkill -9 -f "containerd-shim-runc-v2 .*-address $work/containerd.sock" 2>/dev/null
    for id in $(runc --root "$work/runc/k8s.io" list -q 2>/dev/null); do
        runc --root "$work/runc/k8s.io" delete --force "$id" 2>/dev/null
    done
    findmnt -rn -o TARGET | grep "^$work" | sort -r | xargs -r umount -l 2>/dev/null
    for n in $(ls /var/run/netns 2>/dev/null); do
        [[ $n == cni-* && " $netns_before " != *" $n "* ]] && ip netns del "$n" 2>/dev/null
    done
    ip netns del "$ns" 2>/dev/null
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

# Waits until "$@" succeeds, for at most $1 seconds; the description is $2.
wait_for() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >"$work/wait.out" 2>&1; do
        ((SECONDS < deadline)) || fail "not within ${timeout} s: $what ($(tail -n 3 "$work/wait.out"))"
        sleep 1
    done
}

say "network namespace $ns, node address $node_ip, work directory $work"
mkdir -p "$work"/{logs,pod-logs,etcd,apiserver,kubelet,kubelet-pki,cni,cni-ipam,containerd,runc,pv,image}
ip netns add "$ns"
in_ns ip link set lo up
in_ns ip link add node0 type veth peer name node0-peer
in_ns ip link set node0-peer up
in_ns ip addr add "$node_ip/24" dev node0
in_ns ip link set node0 up
in_ns ip route add default dev node0

# --- the control plane ---------------------------------------------------------------------
token=$(openssl rand -hex 24)
echo "$token,admin,admin,system:masters" >"$work/tokens.csv"
openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
openssl rsa -in "$work/sa.key" -pubout -out "$work/sa.pub" 2>/dev/null
cat >"$work/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {server: "https://$node_ip:6443", insecure-skip-tls-verify: true}
users:
  - name: admin
    user: {token: "$token"}
contexts:
  - name: test
    context: {cluster: test, user: admin}
current-context: test
EOF
chmod 600 "$work/admin.kubeconfig"

run_bg() { # nsenter execs the program, so $! is the program itself
    local name=$1
    shift
    nsenter --net="/var/run/netns/$ns" "$@" >"$work/logs/$name.log" 2>&1 &
    pids+=($!)
}

run_bg etcd etcd --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380
wait_for 30 "etcd answers" in_ns curl -fsS http://127.0.0.1:2379/health
run_bg apiserver "$kube/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --secure-port 6443 --advertise-address "$node_ip" \
    --cert-dir "$work/apiserver" --token-auth-file "$work/tokens.csv" --authorization-mode RBAC \
    --service-cluster-ip-range 10.96.0.0/24 \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$work/sa.pub" --service-account-signing-key-file "$work/sa.key" \
    --kubelet-preferred-address-types InternalIP --profiling=false
wait_for 120 "the API server answers" kc get --raw /readyz
run_bg controller-manager "$kube/kube-controller-manager" --kubeconfig "$work/admin.kubeconfig" \
    --service-account-private-key-file "$work/sa.key" --leader-elect=false \
    --bind-address 127.0.0.1 --profiling=false
run_bg scheduler "$kube/kube-scheduler" --kubeconfig "$work/admin.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --profiling=false
say "API server $(kc version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') with etcd $(etcd --version | sed -n 's/^etcd Version: //p'), controller manager and scheduler up"

# --- the node ------------------------------------------------------------------------------
cat >"$work/containerd.toml" <<EOF
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$work/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni"
EOF
cat >"$work/cni/10-mxk8s.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "mxk8s", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$work/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
run_bg containerd containerd --config "$work/containerd.toml"
wait_for 30 "containerd answers" ctr --address "$work/containerd.sock" version

# The images, without a registry: mxraft from the release binaries, and the pause image every
# pod sandbox runs.
[[ -x $target/release/mxraftd ]] || fail "build the release binaries first (cargo build --release)"
"$root/deploy/docker/build-image.sh" --out "$work/image/mxraft" >/dev/null 2>&1 ||
    fail "deploy/docker/build-image.sh failed"
mkdir -p "$work/image/pause-rootfs"
cp "$kube/pause" "$work/image/pause-rootfs/pause"
umoci init --layout "$work/image/pause" >/dev/null
umoci new --image "$work/image/pause:3.10" >/dev/null
umoci insert --image "$work/image/pause:3.10" "$work/image/pause-rootfs" / >/dev/null
umoci config --image "$work/image/pause:3.10" --config.entrypoint /pause --config.user 65535:65535 >/dev/null
tar -C "$work/image/pause" -cf "$work/image/pause.tar" .
import() { # the repository the kubelet asks for, the archive (its images are named by tag)
    ctr --address "$work/containerd.sock" -n k8s.io images import --snapshotter native --base-name "$1" "$2" >/dev/null
}
import registry.k8s.io/pause "$work/image/pause.tar"
import docker.io/library/mxraft "$work/image/mxraft-$version.oci.tar"
for image in registry.k8s.io/pause:3.10 "docker.io/library/mxraft:$version"; do
    grep -qx "$image" <<<"$(ctr --address "$work/containerd.sock" -n k8s.io images ls -q)" || fail "$image is not in containerd"
done

: >"$work/resolv.conf"
cat >"$work/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$work/containerd.sock
address: $node_ip
readOnlyPort: 0
clusterDNS: [$node_ip]
clusterDomain: cluster.local
resolvConf: $work/resolv.conf
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupsPerQOS: false
enforceNodeAllocatable: []
makeIPTablesUtilChains: false
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: $work/pod-logs
EOF
run_bg kubelet "$kube/kubelet" --config "$work/kubelet.yaml" --kubeconfig "$work/admin.kubeconfig" \
    --root-dir "$work/kubelet" --cert-dir "$work/kubelet-pki" --hostname-override "$node" \
    --node-ip "$node_ip"
run_bg kube-proxy "$kube/kube-proxy" --kubeconfig "$work/admin.kubeconfig" --proxy-mode nftables \
    --hostname-override "$node" --cluster-cidr 10.244.0.0/24 --masquerade-all \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 \
    --conntrack-tcp-timeout-close-wait 0 --metrics-bind-address 127.0.0.1:10249 \
    --healthz-bind-address 127.0.0.1:10256
cat >"$work/Corefile" <<EOF
.:53 {
    bind $node_ip
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $work/admin.kubeconfig test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
run_bg coredns "$kube/coredns" -conf "$work/Corefile"
wait_for 120 "node $node is Ready" kc wait --for=condition=Ready "node/$node" --timeout=2s
say "node $node ready: kubelet $("$kube/kubelet" --version | cut -d' ' -f2), containerd $(containerd --version | cut -d' ' -f3), runc, CNI bridge, kube-proxy (nftables), CoreDNS"

# Local volumes, owned by the pods' user: the test has no provisioner.
kc apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
EOF
for i in $(seq 1 10); do
    mkdir -p "$work/pv/pv$i"
    chown 10001:10001 "$work/pv/pv$i"
    chmod 0700 "$work/pv/pv$i"
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv$i}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: "$work/pv/pv$i"}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$node]}]
EOF
done
kc create namespace mail >/dev/null

# --- the chart -----------------------------------------------------------------------------
cat >"$work/values.yaml" <<EOF
mxHostname: mx-backup.example.net
image: {repository: mxraft, tag: "$version", pullPolicy: Never}
persistence: {size: 1Gi, storageClassName: local}
resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 512Mi}}
probes:
  readiness: {periodSeconds: 2, failureThreshold: 1}
  startup: {periodSeconds: 2, failureThreshold: 150}
terminationGracePeriodSeconds: 20
config:
  # The primary is down (nothing listens there): mail stays queued.
  domains: [{name: example.com, primary: "$node_ip:2599", recipients: any}]
  log: {level: info, format: text}
EOF
pods_ready() { # pods_ready N: exactly N mxraft pods, all ready
    local n
    n=$(kc -n mail get pods -l app.kubernetes.io/name=mxraft -o json | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
ready = [p for p in pods if p["metadata"].get("deletionTimestamp") is None and any(
    c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
print(len(ready) if len(ready) == len(pods) else -1)')
    [[ $n == "$1" ]]
}
status_json() { ctl_in "$1" cluster status -o json; }
voters() { # the sorted voter ids, as pod $1 sees them
    status_json "$1" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join(str(m["id"]) for m in sorted(s["members"], key=lambda m: m["id"]) if m["role"] != "learner"))'
}
leader() { status_json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_id") or "")'; }
has_voters() { [[ $(voters "$1") == "$2" ]]; }
queued() { ctl_in "$1" queue stats --local -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"])'; }
all_queued() { # every listed pod holds the same number of messages: at least the acknowledged
    # ones ($1), at most one per attempt ($2; a session cut off after the data may have queued
    # its message without the 250 reaching the sender, who sent it again)
    local low=$1 high=$2 p n first="" ok=0
    shift 2
    for p in "$@"; do
        n=$(queued "$p")
        echo "$p: $n (acknowledged $low, attempts $high)"
        [[ -z $first ]] && first=$n
        [[ $n =~ ^[0-9]+$ && $n == "$first" && $n -ge $low && $n -le $high ]] || ok=1
    done
    return $ok
}
counts() { echo "$(wc -l <"$acked") $(wc -l <"$acked.attempts")"; }

hm install mx "$root/deploy/helm/mxraft" --namespace mail -f "$work/values.yaml" >"$work/logs/helm-install.log"
grep -q "example.com.  IN MX 20 mx-backup.example.net." "$work/logs/helm-install.log" || fail "helm install printed no MX records"
wait_for 300 "three pods ready" pods_ready 3
wait_for 60 "a cluster of three voters" has_voters mx-mxraft-1 "1 2 3"
cluster_of() { kc -n mail logs "$1" -c mxraftd | grep -oE 'cluster_id="?[0-9a-f]{32}' | tr -d '"' | sed -n "${2}p"; }
cluster_id=$(cluster_of mx-mxraft-0 1)
say "helm install: three pods ready, voters 1 2 3 ($cluster_id)"

smtp_ip=$(kc -n mail get service mx-mxraft-smtp -o jsonpath='{.spec.clusterIP}')
acked=$work/acked.txt
in_ns python3 "$here/mailer.py" "$smtp_ip" 25 "$acked" --prefix first --count 30 >&2
total=$(wc -l <"$acked")
wait_for 30 "every node holds the $total messages" all_queued $(counts) mx-mxraft-0 mx-mxraft-1 mx-mxraft-2
say "mail to the SMTP Service ($smtp_ip:25): $total messages acknowledged, queued on all three nodes"

# The leader's pod deleted. The node is cordoned meanwhile, so the new pod waits and the other
# two must elect a leader of their own (a pod back within the election timeout would simply
# resume leading from its saved vote).
old_leader=$(leader mx-mxraft-0)
[[ -n $old_leader ]] || fail "no leader"
leader_pod=mx-mxraft-$((old_leader - 1))
other_pod=mx-mxraft-$((old_leader % 3))
kc cordon "$node" >/dev/null
kc -n mail delete pod "$leader_pod" >/dev/null
new_leader_elected() { local l; l=$(leader "$other_pod"); echo "leader $l"; [[ -n $l && $l != "$old_leader" ]]; }
wait_for 60 "a new leader after deleting $leader_pod" new_leader_elected
new_leader=$(leader "$other_pod")
in_ns python3 "$here/mailer.py" "$smtp_ip" 25 "$acked" --prefix leader-gone --count 10 >&2
kc uncordon "$node" >/dev/null
wait_for 180 "$leader_pod back and all ready" pods_ready 3
total=$(wc -l <"$acked")
wait_for 60 "every node holds the $total messages" all_queued $(counts) mx-mxraft-0 mx-mxraft-1 mx-mxraft-2
say "deleted the leader's pod $leader_pod (node $old_leader): node $new_leader took over and took mail, the pod came back and caught up, all $total messages on every node"

# helm upgrade with a changed configuration: the pods roll one at a time, mail keeps coming.
revision() { kc -n mail get statefulset mx-mxraft -o jsonpath='{.status.updateRevision}'; }
before=$(revision)
in_ns python3 "$here/mailer.py" "$smtp_ip" 25 "$acked" --prefix rolling --until "$work/stop" \
    >"$work/logs/rolling.out" 2>&1 &
mailer=$!
pids+=("$mailer")
(
    # The fewest ready pods seen during the roll.
    low=3
    while [[ ! -f $work/stop ]]; do
        n=$(kc -n mail get pods -l app.kubernetes.io/name=mxraft --no-headers 2>/dev/null | awk '$2 == "1/1" && $3 == "Running"' | wc -l)
        ((n < low)) && low=$n
        echo "$low" >"$work/low"
        sleep 0.5
    done
) &
watcher=$!
pids+=("$watcher")
hm upgrade mx "$root/deploy/helm/mxraft" --namespace mail -f "$work/values.yaml" \
    --set config.smtp.max_recipients=500 >/dev/null
[[ $(revision) != "$before" ]] || fail "the changed configuration made no new revision"
rolled() {
    local want=$1 s
    s=$(kc -n mail get statefulset mx-mxraft -o jsonpath='{.status.currentRevision} {.status.updatedReplicas} {.status.readyReplicas}')
    [[ $s == "$want 3 3" ]]
}
wait_for 300 "the roll to finish" rolled "$(revision)"
touch "$work/stop"
wait "$mailer" || { cat "$work/logs/rolling.out" >&2; fail "a message sent during the roll was never acknowledged"; }
wait "$watcher"
[[ $(cat "$work/low") -ge 2 ]] || fail "the roll took more than one pod down at once (ready went down to $(cat "$work/low"))"
grep -q '^max_recipients = 500' <<<"$(kc -n mail get configmap mx-mxraft -o jsonpath='{.data.mxraftd\.toml}')" ||
    fail "the new configuration is not in the ConfigMap"
total=$(wc -l <"$acked")
wait_for 60 "every node holds the $total messages" all_queued $(counts) mx-mxraft-0 mx-mxraft-1 mx-mxraft-2
say "helm upgrade: rolled one pod at a time (never fewer than $(cat "$work/low") ready), mail accepted throughout ($(cat "$work/logs/rolling.out")), $total on every node"

# Scale 3 -> 5 -> 3.
hm upgrade mx "$root/deploy/helm/mxraft" --namespace mail --reuse-values --set replicas=5 >/dev/null
wait_for 300 "five pods ready" pods_ready 5
wait_for 120 "five voters" has_voters mx-mxraft-0 "1 2 3 4 5"
wait_for 60 "the new nodes hold the $total messages" all_queued $(counts) mx-mxraft-3 mx-mxraft-4
say "scaled to 5: voters 1 2 3 4 5, the new nodes caught up"
hm upgrade mx "$root/deploy/helm/mxraft" --namespace mail --reuse-values --set replicas=3 >/dev/null
wait_for 120 "three pods left" pods_ready 3
has_voters mx-mxraft-0 "1 2 3" || fail "after scaling down the voters are $(voters mx-mxraft-0)"
pvcs_gone() { ! kc -n mail get pvc data-mx-mxraft-3 && ! kc -n mail get pvc data-mx-mxraft-4; }
wait_for 60 "the PVCs of pods 3 and 4 deleted" pvcs_gone
in_ns python3 "$here/mailer.py" "$smtp_ip" 25 "$acked" --prefix after-scale --count 5 >&2
total=$(wc -l <"$acked")
wait_for 60 "every node holds the $total messages" all_queued $(counts) mx-mxraft-0 mx-mxraft-1 mx-mxraft-2
say "scaled back to 3: the hook removed nodes 4 and 5 (voters 1 2 3), their PVCs deleted, mail accepted"

# Pod 0's PVC deleted: it comes back pristine under node id 1, starts no second cluster.
kc -n mail delete pvc data-mx-mxraft-0 --wait=false >/dev/null
kc -n mail delete pod mx-mxraft-0 >/dev/null
refused() { grep -q "node 1 is already a member but now has an empty data directory" <<<"$(kc -n mail logs mx-mxraft-0 -c mxraftd)"; }
wait_for 180 "pod 0 back and refusing to vote under its old id" refused
pods_ready 3 && fail "pod 0 with an empty volume is ready"
has_voters mx-mxraft-1 "1 2 3" || fail "voters after pod 0 lost its volume: $(voters mx-mxraft-1)"
[[ $(kc -n mail logs mx-mxraft-0 -c mxraftd | grep -c "bootstrapped a new cluster") == 0 ]] ||
    fail "pod 0 bootstrapped a second cluster"
in_ns python3 "$here/mailer.py" "$smtp_ip" 25 "$acked" --prefix pod0-wiped --count 5 >&2
say "pod 0 lost its volume: it stays unready, started no second cluster; the others take mail"
ctl_in mx-mxraft-1 cluster remove 1 >/dev/null
wait_for 180 "pod 0 rejoined and ready" pods_ready 3
wait_for 60 "voters 1 2 3 again" has_voters mx-mxraft-1 "1 2 3"
total=$(wc -l <"$acked")
wait_for 120 "every node holds the $total messages" all_queued $(counts) mx-mxraft-0 mx-mxraft-1 mx-mxraft-2
joined_id=$(cluster_of mx-mxraft-0 '$')
[[ $joined_id == "$cluster_id" ]] || fail "pod 0 is in $joined_id, not $cluster_id"
say "after 'cluster remove 1' pod 0 rejoined $cluster_id and caught up: $total messages on every node"
say "passed"
