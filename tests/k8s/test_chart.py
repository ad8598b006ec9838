"""Unit tests of the Helm chart: the objects `helm template` renders from the values files in
tests/k8s/values, the schema's refusals, and the rendered node configuration checked by
`mxraftd --check-config`. Run by tests/k8s/chart.sh (HELM and MXRAFTD name the binaries)."""

import os
import shutil
import subprocess
import tempfile
import tomllib
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "..", "..", "deploy", "helm", "mxraft")
VALUES = os.path.join(HERE, "values")
HELM = os.environ.get("HELM", "helm")
MXRAFTD = os.environ.get("MXRAFTD", "mxraftd")
# The release the chart is rendered for (the suite's offline schemas are of 1.34).
KUBE = "1.34.0"


def helm(*args, check=True):
    r = subprocess.run([HELM, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{r.stderr}")
    return r


def render(values="minimal.yaml", *sets, release="mx", namespace="mail"):
    args = ["template", release, CHART, "--kube-version", KUBE, "--namespace", namespace, "-f", os.path.join(VALUES, values)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    objects = {}
    for doc in yaml.safe_load_all(out):
        if doc:
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def refusal(values="minimal.yaml", *sets, extra=None):
    args = ["template", "mx", CHART, "--kube-version", KUBE, "-f", os.path.join(VALUES, values)]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        if extra is not None:
            f.write(extra)
            f.flush()
            args += ["-f", f.name]
        for s in sets:
            args += ["--set", s]
        r = helm(*args, check=False)
    assert r.returncode != 0, f"helm template accepted {sets} {extra}"
    return r.stderr


def node_config(objects, pod):
    cm = next(o for (k, _), o in objects.items() if k == "ConfigMap")
    text = cm["data"]["mxraftd.toml"]
    return text, tomllib.loads(text.replace("${POD_NAME}", pod))


def pod_spec(objects, name="mx-mxraft"):
    return objects[("StatefulSet", name)]["spec"]["template"]["spec"]


class StatefulSet(unittest.TestCase):
    def test_pods_start_together_and_keep_their_disks(self):
        sts = render()[("StatefulSet", "mx-mxraft")]["spec"]
        self.assertEqual(sts["podManagementPolicy"], "Parallel")
        self.assertEqual(sts["replicas"], 3)
        self.assertEqual(sts["serviceName"], "mx-mxraft-headless")
        self.assertEqual(sts["updateStrategy"], {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        self.assertEqual(
            sts["persistentVolumeClaimRetentionPolicy"], {"whenDeleted": "Retain", "whenScaled": "Delete"}
        )
        [claim] = sts["volumeClaimTemplates"]
        self.assertEqual(claim["metadata"]["name"], "data")
        self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "10Gi")
        main = pod_spec(render())["containers"][0]
        self.assertIn({"name": "data", "mountPath": "/var/lib/mxraft"}, main["volumeMounts"])

    def test_probes_are_livez_and_readyz_on_the_metrics_port(self):
        main = pod_spec(render())["containers"][0]
        self.assertEqual(main["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "metrics"})
        self.assertEqual(main["livenessProbe"]["httpGet"], {"path": "/livez", "port": "metrics"})
        self.assertEqual(main["startupProbe"]["httpGet"], {"path": "/livez", "port": "metrics"})
        # Generous: ten minutes to open the data directory and catch up.
        startup = main["startupProbe"]
        self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"], 600)
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        self.assertEqual(ports, {"smtp": 2525, "admin": 7001, "cluster": 7100, "metrics": 9100})

    def test_pods_run_unprivileged(self):
        spec = pod_spec(render())
        self.assertIs(spec["automountServiceAccountToken"], False)
        self.assertEqual(spec["securityContext"]["runAsUser"], 10001)
        self.assertIs(spec["securityContext"]["runAsNonRoot"], True)
        for c in spec["containers"] + spec["initContainers"]:
            self.assertIs(c["securityContext"]["readOnlyRootFilesystem"], True, c["name"])
            self.assertEqual(c["securityContext"]["capabilities"], {"drop": ["ALL"]}, c["name"])

    def test_only_the_init_container_sees_the_ca_key(self):
        spec = pod_spec(render())
        volumes = {v["name"]: v for v in spec["volumes"]}
        with_key = {
            name
            for name, v in volumes.items()
            if any(i["key"] == "ca-key.pem" for i in v.get("secret", {}).get("items", []))
        }
        self.assertEqual(with_key, {"ca-signing"})
        [init] = spec["initContainers"]
        self.assertIn("ca-signing", {m["name"] for m in init["volumeMounts"]})
        self.assertNotIn("ca-signing", {m["name"] for m in spec["containers"][0]["volumeMounts"]})
        self.assertEqual(init["command"], ["/usr/local/bin/mxraftctl"])
        self.assertIn("--id-from-hostname", init["args"])
        self.assertIn("--dns=$(POD_NAME).mx-mxraft-headless.mail.svc.cluster.local", init["args"])

    def test_anti_affinity_is_soft_by_default_and_can_be_hard_or_off(self):
        soft = pod_spec(render())["affinity"]["podAntiAffinity"]
        self.assertIn("preferredDuringSchedulingIgnoredDuringExecution", soft)
        hard = pod_spec(render("minimal.yaml", "podAntiAffinity=hard"))["affinity"]["podAntiAffinity"]
        self.assertIn("requiredDuringSchedulingIgnoredDuringExecution", hard)
        self.assertNotIn("affinity", pod_spec(render("minimal.yaml", "podAntiAffinity=none")))

    def test_the_config_checksum_follows_the_config_but_not_the_peer_list(self):
        def checksum(*sets):
            sts = render("minimal.yaml", *sets)[("StatefulSet", "mx-mxraft")]
            return sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

        base = checksum()
        self.assertEqual(base, checksum())
        self.assertNotEqual(base, checksum("config.smtp.max_recipients=500"))
        self.assertNotEqual(base, checksum("config.domains[0].primary=mail2.example.com:25"))
        # Scaling changes only the peers, which only a pristine node reads: no restart.
        self.assertEqual(base, checksum("replicas=5"))


class Services(unittest.TestCase):
    def test_the_headless_service_names_pods_that_are_not_ready(self):
        svc = render()[("Service", "mx-mxraft-headless")]["spec"]
        self.assertEqual(svc["clusterIP"], "None")
        self.assertIs(svc["publishNotReadyAddresses"], True)
        self.assertEqual({p["name"] for p in svc["ports"]}, {"cluster", "admin"})

    def test_smtp_keeps_client_addresses(self):
        svc = render()[("Service", "mx-mxraft-smtp")]["spec"]
        self.assertEqual(svc["type"], "LoadBalancer")
        self.assertEqual(svc["externalTrafficPolicy"], "Local")
        self.assertEqual(svc["ports"], [{"name": "smtp", "port": 25, "targetPort": "smtp", "protocol": "TCP"}])
        node_port = render("issuer.yaml")[("Service", "mx-mxraft-smtp")]["spec"]
        self.assertEqual(node_port["type"], "NodePort")
        self.assertEqual(node_port["ports"][0]["nodePort"], 30025)
        cluster_ip = render("minimal.yaml", "smtp.service.type=ClusterIP")[("Service", "mx-mxraft-smtp")]
        self.assertNotIn("externalTrafficPolicy", cluster_ip["spec"])

    def test_pdb_allows_one_pod_down(self):
        objects = render()
        pdb = objects[("PodDisruptionBudget", "mx-mxraft")]["spec"]
        self.assertEqual(pdb["maxUnavailable"], 1)
        pod_labels = objects[("StatefulSet", "mx-mxraft")]["spec"]["template"]["metadata"]["labels"]
        self.assertLessEqual(pdb["selector"]["matchLabels"].items(), pod_labels.items())
        self.assertNotIn(("PodDisruptionBudget", "mx-mxraft"), render("issuer.yaml"))

    def test_metrics_service_and_monitor_are_optional(self):
        self.assertNotIn(("Service", "mx-mxraft-metrics"), render())
        full = render("full.yaml")
        self.assertEqual(full[("Service", "mx-mxraft-metrics")]["spec"]["ports"][0]["port"], 9100)
        monitor = full[("ServiceMonitor", "mx-mxraft")]
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prometheus")
        self.assertEqual(monitor["spec"]["endpoints"][0]["path"], "/metrics")


class Secrets(unittest.TestCase):
    def test_a_generated_ca_is_pkcs8_and_tokens_are_long(self):
        import base64

        objects = render()
        ca = objects[("Secret", "mx-mxraft-ca")]["data"]
        key = base64.b64decode(ca["ca-key.pem"]).decode()
        self.assertTrue(key.startswith("-----BEGIN PRIVATE KEY-----"), key[:40])
        self.assertIn("BEGIN CERTIFICATE", base64.b64decode(ca["ca.pem"]).decode())
        tokens = objects[("Secret", "mx-mxraft-tokens")]["data"]
        for role in ("admin", "read"):
            self.assertGreaterEqual(len(base64.b64decode(tokens[role])), 32)
        self.assertNotEqual(tokens["admin"], tokens["read"])

    def test_existing_secrets_are_used_and_none_is_made(self):
        objects = render("full.yaml")
        self.assertEqual([k for k in objects if k[0] == "Secret"], [])
        volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
        self.assertEqual(volumes["ca"]["secret"]["secretName"], "my-mxraft-ca")
        self.assertEqual(volumes["tokens"]["secret"]["secretName"], "my-mxraft-tokens")
        self.assertEqual(volumes["smtp-tls"]["secret"]["secretName"], "mx-backup-tls")

    def test_cert_manager_issues_the_ca(self):
        objects = render("cert-manager.yaml")
        cert = objects[("Certificate", "mx-mxraft-ca")]["spec"]
        self.assertIs(cert["isCA"], True)
        self.assertEqual(cert["privateKey"]["encoding"], "PKCS8")
        self.assertEqual(cert["issuerRef"], {"name": "mx-mxraft-selfsigned", "kind": "Issuer"})
        self.assertIn(("Issuer", "mx-mxraft-selfsigned"), objects)
        items = {v["name"]: v for v in pod_spec(objects)["volumes"]}["ca-signing"]["secret"]["items"]
        self.assertEqual(items, [{"key": "tls.crt", "path": "ca.pem"}, {"key": "tls.key", "path": "ca-key.pem"}])
        self.assertNotIn(("Secret", "mx-mxraft-ca"), objects)
        own = render("issuer.yaml")
        self.assertEqual(own[("Certificate", "mx-mxraft-ca")]["spec"]["issuerRef"]["kind"], "ClusterIssuer")
        self.assertNotIn(("Issuer", "mx-mxraft-selfsigned"), own)


class NodeConfig(unittest.TestCase):
    def test_every_pod_gets_its_peers_and_pod_zero_bootstraps(self):
        text, config = node_config(render("minimal.yaml", "replicas=5"), "mx-mxraft-3")
        self.assertIs(config["node"]["id_from_hostname"], True)
        self.assertEqual(config["cluster"]["bootstrap_id"], 1)
        domain = "mx-mxraft-headless.mail.svc.cluster.local"
        self.assertEqual(config["cluster"]["peers"], [f"mx-mxraft-{i}.{domain}:7100" for i in range(5)])
        self.assertEqual(config["cluster"]["advertise"], f"mx-mxraft-3.{domain}:7100")
        self.assertEqual(config["smtp"]["hostname"], "mx-backup.example.net")
        self.assertEqual(config["smtp"]["shutdown_grace"], "50s")
        self.assertEqual(config["domains"], [{"name": "example.com", "primary": "mail.example.com:25"}])
        self.assertIn("${POD_NAME}", text)

    def test_values_keys_reach_their_sections(self):
        _, config = node_config(render("full.yaml"), "mx-mxraft-0")
        self.assertEqual(config["smtp"]["max_message_size"], 26214400)
        self.assertEqual(config["smtp"]["tls_cert_file"], "/etc/mxraft/smtp-tls/tls.crt")
        self.assertEqual(config["delivery"]["etrn_clients"], ["192.0.2.0/24"])
        self.assertEqual(config["cluster"]["heartbeat_interval"], "200ms")
        self.assertEqual(config["log"], {"level": "debug", "format": "text"})
        self.assertEqual(config["domains"][1], {"name": "example.org", "mx_preference": 20, "recipients": "any", "max_queue_lifetime": "7d"})
        self.assertEqual(config["routes"], [{"domain": "senders.example", "next_hop": "relay.example.net:25"}])

    def test_mxraftd_accepts_every_rendered_config(self):
        for values in sorted(os.listdir(VALUES)):
            objects = render(values)
            replicas = objects[("StatefulSet", "mx-mxraft")]["spec"]["replicas"]
            text, _ = node_config(objects, "x")
            with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
                f.write(text)
                f.flush()
                for ordinal in range(replicas):
                    env = dict(os.environ, POD_NAME=f"mx-mxraft-{ordinal}")
                    r = subprocess.run(
                        [MXRAFTD, "--check-config", "--node-id", str(ordinal + 1), "--config", f.name],
                        capture_output=True, text=True, env=env,
                    )
                    self.assertEqual(r.returncode, 0, f"{values}, pod {ordinal}: {r.stderr}")
            # Without POD_NAME the file does not load, and the error says why.
            r = subprocess.run(
                [MXRAFTD, "--check-config", "--node-id", "1", "--config", "/dev/stdin"],
                input=text, capture_output=True, text=True,
                env={k: v for k, v in os.environ.items() if k != "POD_NAME"},
            )
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("environment variable POD_NAME is not set", r.stderr)


class Hooks(unittest.TestCase):
    def test_no_scale_down_job_without_a_smaller_replica_count(self):
        # `helm template` has no cluster to look the StatefulSet up in: no hook.
        self.assertEqual([k for k in render() if k[0] == "Job"], [])


class Schema(unittest.TestCase):
    def test_bad_values_are_refused_with_a_clear_message(self):
        cases = [
            (("replicas=0",), "/replicas"),
            (("replicas=three",), "/replicas"),
            (("replica=3",), "'replica' not allowed"),
            (("config.domains[0].mx_preference=10",), "config.domains[0] (example.com) needs exactly one way to its primary"),
            (("config.domains[0].primary=mail.example.com",), "/config/domains/0/primary"),
            (("smtp.service.type=External",), "/smtp/service/type"),
            (("smtp.service.externalTrafficPolicy=Nearest",), "/smtp/service/externalTrafficPolicy"),
            (("config.smtp.listen=0.0.0.0:25",), "config.smtp.listen is set by the chart"),
            (("config.cluster.peers={a:1}",), "config.cluster.peers is set by the chart"),
            (("config.smtp.max_recipients.x=1",), "/config/smtp/max_recipients"),
            (("tls.ca.source=vault",), "/tls/ca/source"),
            (("tls.ca.source=existing",), "tls.ca.existingSecret is required"),
            (("mxHostname=",), "mxHostname is required"),
            (("mxHostname=not a name",), "/mxHostname"),
            (("podAntiAffinity=always",), "/podAntiAffinity"),
            (("metrics.serviceMonitor.enabled=true",), "needs metrics.service.enabled"),
            (("smtp.containerPort=25",), "/smtp/containerPort"),
        ]
        extra_cases = [
            ("config: {domains: [{name: example.com}]}", "config.domains[0] (example.com) needs exactly one way to its primary"),
            ("config: {domains: []}", "config.domains is empty"),
            ("config: {domains: [{name: example.com, primary: 'm.example.com:25', route: x}]}", "'route' not allowed"),
        ]
        for extra, message in extra_cases:
            with self.subTest(extra=extra):
                self.assertIn(message, refusal("minimal.yaml", extra=extra))
        for sets, message in cases:
            with self.subTest(sets=sets):
                self.assertIn(message, refusal("minimal.yaml", *sets))

    def test_warnings_for_a_cluster_that_cannot_lose_a_node(self):
        def notes(*sets):
            # `helm install --dry-run` needs a cluster; in a copy of the chart a template renders
            # NOTES.txt (with tpl) into a ConfigMap that `helm template` shows.
            with tempfile.TemporaryDirectory() as tmp:
                chart = os.path.join(tmp, "mxraft")
                shutil.copytree(CHART, chart)
                shutil.copy(os.path.join(chart, "templates", "NOTES.txt"), os.path.join(chart, "notes.txt"))
                with open(os.path.join(chart, "templates", "notes-test.yaml"), "w") as f:
                    f.write('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
                            'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n')
                args = ["template", "mx", chart, "--kube-version", KUBE, "-f", os.path.join(VALUES, "minimal.yaml"),
                        "--show-only", "templates/notes-test.yaml"]
                for s in sets:
                    args += ["--set", s]
                return yaml.safe_load(helm(*args).stdout)["data"]["notes"]

        three = notes()
        self.assertNotIn("WARNING", three)
        self.assertIn("example.com.  IN MX 20 mx-backup.example.net.", three)
        self.assertIn("IN MX <lower than 20> mail.example.com.", three)
        self.assertIn("mxraftctl cluster status", three)
        self.assertIn("mxraftctl recipients import - < addresses.txt", three)
        self.assertIn("WARNING: replicas is 1", notes("replicas=1"))
        self.assertIn("WARNING: replicas is 4, an even number", notes("replicas=4"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
