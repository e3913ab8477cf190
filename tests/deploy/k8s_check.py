"""k8s_check.py: checks manifests rendered by `kubectl kustomize` (deploy/k8s)
for what the API server would accept but a user would regret: a Deployment
without probes, limits or a non-root, read-only container; no PodDisruptionBudget;
an env variable taken from a ConfigMap or Secret key that is not there; a
setting the service does not read; in production, a PostgreSQL or Redis of the
cluster's own, or connection URLs that are not secret.

    python3 k8s_check.py ROOT NAME RENDERED.yaml [--production]

ROOT is the repository (the services' main.c and svc/config.h, svc/auth.h name their settings). Prints one
line per problem and exits 1 if there is any, else prints a summary, exits 0.
"""

import base64
import re
import sys

import yaml

# Our services (container names) and, for each, the connection settings that
# carry passwords: in production these come from a Secret only.
CONNECTION_ENV = {
    "lock-svc": ["REDIS_URL"],
    "balance-svc": ["DATABASE_URL"],
    "reservation-svc": ["DATABASE_URL"],
}
# Host names of the try-it PostgreSQL and Redis of the base (postgres.yaml,
# redis.yaml), optionally qualified by namespace and cluster domain.
TRY_IT_HOST = re.compile(
    r"^(postgres|redis|redis-sentinel|redis-\d+\.redis|redis-sentinel-\d+\.redis-sentinel)"
    r"(\.[a-z0-9-]+(\.svc(\.[a-z0-9.-]+)?)?)?$"
)
DEFAULT_GRACE_MS = 10000  # GRACE_MS default, libsvc/include/svc/config.h
DEFAULT_TERMINATION_GRACE_S = 30


class Checker:
    def __init__(self, root, name, docs):
        self.root = root
        self.name = name
        self.docs = [d for d in docs if isinstance(d, dict)]
        self.problems = []
        self.settings_cache = {}

    def fail(self, where, what):
        self.problems.append(f"{self.name}: {where}: {what}")

    def objects(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    def find(self, kind, namespace, name):
        for d in self.objects(kind):
            md = d.get("metadata", {})
            if md.get("name") == name and md.get("namespace") == namespace:
                return d
        return None

    # ---------- what a service reads ----------

    def settings_of(self, service):
        """Environment variables service's option table names, or None if unknown."""
        if service in self.settings_cache:
            return self.settings_cache[service]
        names = None
        try:
            with open(f"{self.root}/{service}/main.c", encoding="utf-8") as f:
                main_c = f.read()
            config_h = ""
            # The option macros every service may use: svc/config.h, svc/auth.h.
            for header in ("config.h", "auth.h"):
                with open(f"{self.root}/libsvc/include/svc/{header}", encoding="utf-8") as f:
                    config_h += f.read()
            # {"flag", "ENV", ...} or {NULL, "ENV", ...}: a setting read from the environment only.
            pattern = re.compile(r'(?:"[a-z0-9-]+"|NULL),\s*"([A-Z][A-Z0-9_]*)"')
            names = set(pattern.findall(main_c)) | set(pattern.findall(config_h))
        except OSError:
            pass
        self.settings_cache[service] = names
        return names

    # ---------- references to ConfigMaps and Secrets ----------

    def keys_of(self, kind, namespace, name):
        obj = self.find(kind, namespace, name)
        if obj is None:
            return None
        keys = set((obj.get("data") or {}).keys())
        keys |= set((obj.get("binaryData") or {}).keys())
        keys |= set((obj.get("stringData") or {}).keys())
        return keys

    def check_ref(self, where, kind, namespace, ref, key):
        if ref.get("optional"):
            return
        keys = self.keys_of(kind, namespace, ref.get("name"))
        if keys is None:
            self.fail(where, f"{kind} {ref.get('name')} is not in the rendered manifests")
        elif key is not None and key not in keys:
            self.fail(where, f"{kind} {ref.get('name')} has no key {key}")

    def check_refs(self, where, namespace, pod):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            cw = f"{where} container {c.get('name')}"
            for e in c.get("env", []):
                vf = e.get("valueFrom") or {}
                if "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    self.check_ref(f"{cw} env {e['name']}", "ConfigMap", namespace, r, r.get("key"))
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    self.check_ref(f"{cw} env {e['name']}", "Secret", namespace, r, r.get("key"))
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef:
                    self.check_ref(f"{cw} envFrom", "ConfigMap", namespace, ef["configMapRef"], None)
                if "secretRef" in ef:
                    self.check_ref(f"{cw} envFrom", "Secret", namespace, ef["secretRef"], None)
        for v in pod.get("volumes", []):
            vw = f"{where} volume {v.get('name')}"
            if "configMap" in v:
                src, kind, name = v["configMap"], "ConfigMap", v["configMap"].get("name")
            elif "secret" in v:
                src, kind, name = v["secret"], "Secret", v["secret"].get("secretName")
            else:
                continue
            ref = {"name": name, "optional": src.get("optional")}
            self.check_ref(vw, kind, namespace, ref, None)
            for item in src.get("items", []):
                self.check_ref(vw, kind, namespace, ref, item.get("key"))

    # ---------- one Deployment ----------

    def env_value(self, namespace, container, name):
        """The value container gets for env name (literal or from a ConfigMap), else None."""
        for e in container.get("env", []):
            if e.get("name") != name:
                continue
            if "value" in e:
                return e["value"]
            r = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if r:
                cm = self.find("ConfigMap", namespace, r.get("name")) or {}
                return (cm.get("data") or {}).get(r.get("key"))
        return None

    def check_container(self, where, pod, c, probes):
        cw = f"{where} container {c.get('name')}"
        if probes:
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    self.fail(cw, f"no {probe}")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if not (res.get(part) or {}).get(what):
                    self.fail(cw, f"no resources.{part}.{what}")
        psc = pod.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        user = sc.get("runAsUser", psc.get("runAsUser"))
        if non_root is not True:
            self.fail(cw, "runAsNonRoot is not true (container or pod securityContext)")
        if user == 0:
            self.fail(cw, "runAsUser is 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.fail(cw, "securityContext.readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            self.fail(cw, "securityContext.allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            self.fail(cw, "securityContext.capabilities.drop lacks ALL")

    def check_service_container(self, where, namespace, pod, c, service):
        """What holds for our own services: gRPC probes, known settings, grace period."""
        cw = f"{where} container {c.get('name')}"
        grpc_ports = {p.get("containerPort") for p in c.get("ports", []) if p.get("name") == "grpc"}
        if not grpc_ports:
            self.fail(cw, "no container port named grpc")
        for probe in ("readinessProbe", "livenessProbe"):
            port = ((c.get(probe) or {}).get("grpc") or {}).get("port")
            if c.get(probe) and port not in grpc_ports:
                self.fail(cw, f"{probe} is not a gRPC health check on the grpc port")
        known = self.settings_of(service)
        if known is None:
            self.fail(cw, f"cannot read the settings of {service} from {service}/main.c")
        else:
            for e in c.get("env", []):
                if e["name"] not in known:
                    self.fail(cw, f"env {e['name']} is not a setting of {service} (main.c)")
        grace = self.env_value(namespace, c, "GRACE_MS")
        try:
            grace_ms = int(grace) if grace is not None else DEFAULT_GRACE_MS
        except ValueError:
            self.fail(cw, f"GRACE_MS {grace!r} is not a number")
            return
        tgps = pod.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_S)
        if tgps * 1000 <= grace_ms:
            self.fail(cw, f"terminationGracePeriodSeconds {tgps} is not above GRACE_MS {grace_ms}")

    def check_deployment(self, d):
        md = d.get("metadata", {})
        namespace = md.get("namespace")
        where = f"Deployment {md.get('name')}"
        template = (d.get("spec") or {}).get("template") or {}
        pod = template.get("spec") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        containers = pod.get("containers") or []
        if not containers:
            self.fail(where, "no containers")
        for c in containers:
            self.check_container(where, pod, c, probes=True)
            service = c.get("name")
            if service in CONNECTION_ENV:
                self.check_service_container(where, namespace, pod, c, service)
        for c in pod.get("initContainers") or []:
            self.check_container(where, pod, c, probes=False)
        if not any(
            selects(p["spec"].get("selector"), labels)
            for p in self.objects("PodDisruptionBudget")
            if p.get("metadata", {}).get("namespace") == namespace
        ):
            self.fail(where, "no PodDisruptionBudget selects its pods")
        if not any(
            s.get("spec", {}).get("selector")
            and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
            for s in self.objects("Service")
            if s.get("metadata", {}).get("namespace") == namespace
        ):
            self.fail(where, "no Service selects its pods")

    # ---------- production ----------

    def check_production(self):
        for s in self.objects("StatefulSet"):
            name = s.get("metadata", {}).get("name", "")
            images = [c.get("image", "") for c in s["spec"]["template"]["spec"].get("containers", [])]
            if any(re.search(r"postgres|redis", x) for x in [name] + images):
                self.fail(f"StatefulSet {name}", "production runs its own PostgreSQL or Redis")
        for d in self.objects("Deployment"):
            namespace = d.get("metadata", {}).get("namespace")
            where = f"Deployment {d.get('metadata', {}).get('name')}"
            for c in d["spec"]["template"]["spec"].get("containers", []):
                cw = f"{where} container {c.get('name')}"
                env = {e["name"]: e for e in c.get("env", [])}
                wanted = set(CONNECTION_ENV.get(c.get("name"), []))
                wanted |= {n for n in env if n in ("DATABASE_URL", "REDIS_URL")}
                for n in sorted(wanted):
                    ref = (env.get(n, {}).get("valueFrom") or {}).get("secretKeyRef")
                    if n not in env:
                        self.fail(cw, f"no {n}")
                    elif ref is None:
                        self.fail(cw, f"{n} does not come from a Secret")
                    else:
                        self.check_external(f"{cw} {n}", namespace, ref)

    def check_external(self, where, namespace, ref):
        secret = self.find("Secret", namespace, ref.get("name"))
        if secret is None:
            return  # reported by check_refs
        if ref.get("key") in (secret.get("stringData") or {}):
            value = secret["stringData"][ref["key"]]
        elif ref.get("key") in (secret.get("data") or {}):
            value = base64.b64decode(secret["data"][ref["key"]]).decode("utf-8", "replace")
        else:
            return
        for host in re.findall(r"(?:@|//|,|host=)\[?([A-Za-z0-9.-]+)\]?(?::\d+|[/ ]|$)", value):
            if TRY_IT_HOST.match(host):
                self.fail(where, f"points at {host}, the base's try-it server, not an external one")

    def run(self, production):
        deployments = self.objects("Deployment")
        if not deployments:
            self.fail("manifests", "no Deployment")
        for d in deployments:
            self.check_deployment(d)
        for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            for w in self.objects(kind):
                md = w.get("metadata", {})
                pod = ((w.get("spec") or {}).get("template") or {}).get("spec") or {}
                self.check_refs(f"{kind} {md.get('name')}", md.get("namespace"), pod)
        if production:
            self.check_production()
        return len(deployments)


def selects(selector, labels):
    """True if a label selector (matchLabels, matchExpressions) matches labels."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def main(argv):
    if len(argv) not in (4, 5) or (len(argv) == 5 and argv[4] != "--production"):
        print(__doc__, file=sys.stderr)
        return 2
    root, name, path = argv[1], argv[2], argv[3]
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    checker = Checker(root, name, docs)
    n = checker.run(production=len(argv) == 5)
    for p in checker.problems:
        print(f"FAIL {p}")
    if checker.problems:
        return 1
    print(f"ok   {name}: {n} Deployments, {len(checker.docs)} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
