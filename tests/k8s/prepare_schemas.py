"""Writes the Kubernetes JSON schemas of one release, from the kubernetes-validate wheel, in the
form kubeconform reads offline: one file per kind (statefulset-apps-v1.json, service-v1.json,
...) beside _definitions.json, each without its https://kubernetes.io/ $id and with its
references made relative, so nothing is fetched.

    python3 prepare_schemas.py WHEEL VERSION OUT_DIR      (VERSION e.g. 1.34.0)
"""

import json
import os
import sys
import zipfile


def rewrite(node):
    if isinstance(node, dict):
        node.pop("$id", None)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("/api/_definitions.json#"):
            node["$ref"] = ref[len("/api/"):]
        for value in node.values():
            rewrite(value)
    elif isinstance(node, list):
        for value in node:
            rewrite(value)


def main(wheel, version, out_dir):
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
    tmp = out_dir + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    count = 0
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not name.startswith(prefix) or not name.endswith(".json"):
                continue
            schema = json.loads(z.read(name))
            rewrite(schema)
            with open(os.path.join(tmp, name[len(prefix):]), "w") as f:
                json.dump(schema, f)
            count += 1
    if count == 0:
        sys.exit(f"prepare_schemas: {wheel} has no schemas for {version}")
    if os.path.isdir(out_dir):
        for name in os.listdir(out_dir):
            os.remove(os.path.join(out_dir, name))
        os.rmdir(out_dir)
    os.rename(tmp, out_dir)
    print(f"prepare_schemas: {count} schemas in {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
