"""The deployment files in deploy/: Kubernetes manifests against the API schemas (kubernetes-validate, offline),
the compose stack's structure and policy, the Dockerfile's shape, its health check, and (slow) its pip steps
replayed in a clean virtual environment followed by a start of the installed gateway.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import ROOT, Gateway, _stop, free_port, one_model_policy

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The Kubernetes version the manifests are validated against (kubernetes-validate ships its schemas).
K8S_VERSION = "1.30.0"


def _env_without_secrets() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PROMETHEUS_MULTIPROC_DIR")}
    return env


def policy_check(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "policy", "check", str(path)], cwd=ROOT,
                          env={**_env_without_secrets(), **(env or {})}, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------------------------------------
# Kubernetes

def _k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in _k8s_documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_manifests_validate_against_the_api_schemas():
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (it ships the Kubernetes JSON schemas)")
    from kubernetes_validate.utils import all_versions

    assert any(v.startswith(K8S_VERSION.rsplit(".", 1)[0]) for v in all_versions()), \
        f"kubernetes-validate {kubernetes_validate.__version__} carries no schemas for {K8S_VERSION}"
    docs = _k8s_documents()
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    failures = []
    for filename, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except Exception as exc:  # noqa: BLE001 - report every failing document at once
            failures.append(f"{filename}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: "
                            f"{getattr(exc, 'message', exc)}")
    assert not failures, "\n".join(failures)


def test_k8s_gateway_deployment_wiring():
    deployment = _one("Deployment", "llm-gateway")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], labels)
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "gateway")
    env = {e["name"]: e for e in container["env"]}

    # Probes: readiness on /readyz, liveness on /healthz, on the container's port.
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names["http"] == int(env["GATEWAY_PORT"]["value"]) == 8080
    assert env["GATEWAY_HOST"]["value"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 8080)
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])

    # Secrets by reference only.
    for name in ("OPENAI_API_KEY", "GATEWAY_ADMIN_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "gateway-secrets" and ref["key"] == name
        assert "value" not in env[name]

    # The policy ConfigMap is mounted as a directory (a subPath mount never sees ConfigMap updates), and
    # GATEWAY_POLICY names a key of it inside that directory.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]])
    assert "subPath" not in mount and mount.get("readOnly") is True
    configmap = _one("ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    policy_path = env["GATEWAY_POLICY"]["value"]
    assert os.path.dirname(policy_path) == mount["mountPath"].rstrip("/")
    assert os.path.basename(policy_path) in configmap["data"]

    # Redis: the URL names the Redis Service and its port; the Service selects the Redis pods.
    redis_url = env["GATEWAY_REDIS_URL"]["value"]
    host, port = re.match(r"redis://([^:/]+):(\d+)", redis_url).groups()
    redis_service = _one("Service", host)
    assert any(p["port"] == int(port) for p in redis_service["spec"]["ports"])
    redis_deployment = _one("Deployment", "gateway-redis")
    assert _matches(redis_service["spec"]["selector"], redis_deployment["spec"]["template"]["metadata"]["labels"])
    assert not _matches(redis_service["spec"]["selector"], labels)

    # The gateway Service, HPA and PDB all point at the gateway pods.
    service = _one("Service", "llm-gateway")
    assert _matches(service["spec"]["selector"], labels)
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 8080)
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm-gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = _one("PodDisruptionBudget")
    assert _matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"].get("minAvailable", 0) < hpa["spec"]["minReplicas"]  # a node drain can proceed

    # Runs as the image's non-root user.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001


def test_k8s_configmap_policy_passes_policy_check(tmp_path):
    configmap = _one("ConfigMap", "gateway-policy")
    for key, text in configmap["data"].items():
        path = tmp_path / key
        path.write_text(text)
        result = policy_check(path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_configmap_symlink_swap_is_hot_reloaded(upstream, tmp_path):
    """The layout the kubelet writes for a ConfigMap volume, and its atomic update, against a real gateway."""
    def write_version(n: int, text: str) -> None:
        data = tmp_path / f"..2024_01_0{n}_00_00_00.{n}"
        data.mkdir()
        (data / "policy.yaml").write_text(textwrap.dedent(text))
        tmp_link = tmp_path / "..data_tmp"
        tmp_link.symlink_to(data.name)
        os.replace(tmp_link, tmp_path / "..data")  # the kubelet's atomic rename of the ..data symlink

    good = one_model_policy(upstream.url)
    write_version(1, good)
    (tmp_path / "policy.yaml").symlink_to("..data/policy.yaml")
    # (Gateway writes its own copy of the policy too; the later --policy flag wins.)
    gateway = Gateway(good, tmp_path, extra_args=["--policy", str(tmp_path / "policy.yaml")])
    try:
        headers = gateway.admin()
        before = httpx.get(gateway.base + "/admin/policy", headers=headers, timeout=5).json()["version"]
        write_version(2, good.replace("retry: {attempts: 1}", "retry: {attempts: 2}"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = httpx.get(gateway.base + "/admin/policy", headers=headers, timeout=5).json()
            if state["version"] != before:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the ConfigMap-style symlink swap was not reloaded:\n{gateway.log()}")
        assert state["last_reload"]["ok"] is True
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------------------
# docker compose

def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _env_of(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def test_compose_services_and_healthchecks():
    compose = _compose()
    services = compose["services"]
    gateways = {name: s for name, s in services.items() if _command(s)[:2] == ["gateway", "serve"]}
    replicas = sum(int((s.get("deploy") or {}).get("replicas", 1)) for s in gateways.values())
    assert replicas >= 2, "two gateway replicas"
    assert "redis" in services and "edge" in services

    for name, service in services.items():
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"service {name} has no health check"

    redis_port = 6379
    for name, service in gateways.items():
        env = _env_of(service)
        assert env["GATEWAY_HOST"] == "0.0.0.0"
        assert env["GATEWAY_REDIS_URL"].startswith(f"redis://redis:{redis_port}"), name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "python" in service["healthcheck"]["test"] and any("/healthz" in t for t in service["healthcheck"]["test"])
        assert "OPENAI_API_KEY" in env and "GATEWAY_ADMIN_KEY" in env
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()

    # The edge server: llama.cpp's server from the same image on the SmolLM2 weights the Dockerfile links.
    edge = services["edge"]
    command = _command(edge)
    assert command[:3] == ["python", "-m", "llama_cpp.server"]
    model = command[command.index("--model") + 1]
    assert model in (DEPLOY / "Dockerfile").read_text(), "the edge server's --model is the path the image links"
    edge_port = command[command.index("--port") + 1]
    assert edge["image"] == next(iter(gateways.values()))["image"]

    # The load balancer (if any) names every gateway service.
    if "lb" in services:
        conf = (DEPLOY / "nginx.conf").read_text()
        for name in gateways:
            assert f"server {name}:8080" in conf
        assert "proxy_buffering off" in conf  # streams pass through

    # The policy the gateways mount: read-only, where GATEWAY_POLICY points, and it names the edge service.
    for name, service in gateways.items():
        policy_file = _env_of(service)["GATEWAY_POLICY"]
        mounts = [v for v in service["volumes"] if isinstance(v, dict)]
        mount = next(v for v in mounts if policy_file.startswith(v["target"].rstrip("/") + "/")
                     or policy_file == v["target"])
        assert mount.get("read_only") is True, f"{name}: the policy is mounted read-only"
        source = (DEPLOY / mount["source"]).resolve()
        host_file = source / os.path.relpath(policy_file, mount["target"]) if source.is_dir() else source
        assert host_file.is_file(), host_file
        text = host_file.read_text()
        assert f"http://edge:{edge_port}/v1" in text


NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
if NGINX is None and os.environ.get("GATEWAY_REQUIRE_NGINX") == "1":
    raise RuntimeError("GATEWAY_REQUIRE_NGINX=1 but nginx is not installed (.ci/run installs nginx-light)")


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")
def test_compose_load_balancer_config_with_real_nginx(upstream, tmp_path):
    """deploy/nginx.conf in a real nginx, in front of two real gateways (the compose names mapped to loopback)."""
    gateways = [Gateway(one_model_policy(upstream.url), tmp_path) for _ in range(2)]
    port = free_port()
    conf = (DEPLOY / "nginx.conf").read_text()
    for i, gateway in enumerate(gateways, 1):
        conf = conf.replace(f"server gateway-{i}:8080", f"server 127.0.0.1:{gateway.port}")
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};").replace("pid /tmp/nginx.pid;",
                                                                            f"pid {tmp_path}/nginx.pid;")
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / sub).mkdir()
    temp_paths = " ".join(f"{sub}_temp_path {tmp_path}/{sub};" for sub in
                          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = conf.replace("http {", "http {\n    " + temp_paths, 1)
    (tmp_path / "nginx.conf").write_text(conf)
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert nginx.poll() is None, nginx.stdout.read().decode(errors="replace")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "nginx did not answer"
            time.sleep(0.1)
        for i in range(6):
            r = httpx.post(base + "/v1/chat/completions", timeout=10,
                           json={"model": "auto", "messages": [{"role": "user", "content": f"lb {i}"}]})
            assert r.status_code == 200 and r.headers["x-gateway-model"] == "edge-a"
        with httpx.stream("POST", base + "/v1/chat/completions", timeout=10, json={
                "model": "auto", "stream": True, "messages": [{"role": "user", "content": "lb stream"}]}) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in s.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        served = [httpx.get(g.base + "/admin/status", headers=g.admin(), timeout=5).json()["requests"]
                  for g in gateways]
        assert all(n >= 2 for n in served) and sum(served) == 7, served  # round robin over both replicas
    finally:
        _stop(nginx)
        for gateway in gateways:
            gateway.stop()


def test_compose_policy_passes_policy_check():
    compose = _compose()
    checked = set()
    for service in compose["services"].values():
        policy_file = _env_of(service).get("GATEWAY_POLICY")
        if not policy_file:
            continue
        for mount in service.get("volumes") or []:
            if isinstance(mount, dict) and policy_file.startswith(mount["target"].rstrip("/") + "/"):
                source = (DEPLOY / mount["source"]).resolve()
                checked.add(source / os.path.relpath(policy_file, mount["target"]))
    assert checked
    for path in checked:
        result = policy_check(path, {"GATEWAY_CLIENT_KEY": "compose-client-key"})  # compose requires it
        assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------
# Dockerfile

def parse_dockerfile(text: str) -> list[dict]:
    """Stages of a Dockerfile: [{"from", "name", "instructions": [(INSTRUCTION, args)]}], continuations joined."""
    lines, buf = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    args, stages = {}, []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
        elif instruction == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            stages.append({"from": image, "name": parts[2] if len(parts) > 2 else None, "instructions": []})
        else:
            stages[-1]["instructions"].append((instruction, rest))
    return stages


_SHELL_SEPARATORS = {"&&", "||", ";", "|", "if", "then", "else", "fi", "do", "done"}


def _shell_commands(script: str) -> list[list[str]]:
    """A RUN line's simple commands (split on && ; | and if/then/fi), quotes respected."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in _SHELL_SEPARATORS:
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    if current:
        commands.append(current)
    return commands


def _pip_steps(stage: dict) -> list[list[str]]:
    """Each pip invocation in the stage's RUN commands, as argument lists after `pip`."""
    steps = []
    for instruction, rest in stage["instructions"]:
        if instruction != "RUN":
            continue
        rest = re.sub(r"^(--mount=\S+\s+)+", "", rest)
        for words in _shell_commands(rest):
            for i, word in enumerate(words):
                if (word == "pip" or word.endswith("/pip")) and i + 1 < len(words):
                    steps.append(words[i + 1:])
                    break
                if word == "-m" and i + 1 < len(words) and words[i + 1] == "pip" and i + 2 < len(words):
                    steps.append(words[i + 2:])
                    break
    return steps


def test_dockerfile_shape():
    stages = parse_dockerfile((DEPLOY / "Dockerfile").read_text())
    assert len(stages) >= 2, "multi-stage"
    assert all(s["from"] == "python:3.11-slim" for s in stages)
    build, final = stages[0], stages[-1]

    build_run = " ".join(rest for i, rest in build["instructions"] if i == "RUN")
    build_env = " ".join(rest for i, rest in build["instructions"] if i in ("ENV", "ARG"))
    assert "cmake" in build_run and "build-essential" in build_run
    assert "-DGGML_NATIVE=OFF" in build_env, "a portable llama.cpp build"
    assert any(step[0] == "wheel" and ".[edge]" in step for step in _pip_steps(build)), _pip_steps(build)

    final_instructions = dict(final["instructions"])  # the last of each kind
    user = final_instructions["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert "8080" in final_instructions["EXPOSE"].split()
    envs = " ".join(rest for i, rest in final["instructions"] if i == "ENV")
    assert re.search(r"GATEWAY_HOST=0\.0\.0\.0", envs)
    healthcheck = final_instructions["HEALTHCHECK"]
    assert "python" in healthcheck and "healthcheck.py" in healthcheck
    assert "urllib" in (DEPLOY / "healthcheck.py").read_text()
    assert not any(i == "RUN" and re.search(r"apt-get install[^&]*(build-essential|cmake|gcc)", rest)
                   for i, rest in final["instructions"]), "no compilers in the final image"
    # Every COPY source from the build context exists.
    for instruction, rest in (i for s in stages for i in s["instructions"]):
        if instruction == "COPY" and "--from" not in rest:
            sources = [w for w in shlex.split(rest) if not w.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"


def test_healthcheck_script(upstream, tmp_path):
    script = str(DEPLOY / "healthcheck.py")
    gateway = Gateway(one_model_policy(upstream.url), tmp_path)
    try:
        ok = subprocess.run([sys.executable, script], env={**os.environ, "GATEWAY_PORT": str(gateway.port)},
                            capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        explicit = subprocess.run([sys.executable, script, gateway.base + "/readyz"], capture_output=True, timeout=30)
        assert explicit.returncode == 0
    finally:
        gateway.stop()
    down = subprocess.run([sys.executable, script, f"http://127.0.0.1:{free_port()}/healthz"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "unhealthy" in down.stderr


# ---------------------------------------------------------------------------------------------------------
# The Dockerfile's pip steps, replayed (slow: a clean virtual environment from PyPI)

def _copy_build_context(dest: Path) -> None:
    """What `COPY . /src` brings for the build (see deploy/Dockerfile.dockerignore), without writing in ROOT."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.py", "setup.cfg", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "gateway", dest / "gateway", ignore=ignore)
    shutil.copytree(ROOT / "policies", dest / "policies", ignore=ignore)


@pytest.mark.slow
def test_dockerfile_pip_steps_in_a_clean_venv(upstream, tmp_path):
    """Replays the Dockerfile's pip steps: the gateway itself is installed for real (without compiling the
    edge extra unless GATEWAY_DEPLOY_FULL_BUILD=1), the edge packages are only resolved with
    `pip download --no-deps`; then the installed gateway (not the source tree) serves a request."""
    stages = parse_dockerfile((DEPLOY / "Dockerfile").read_text())
    build_steps, final_steps = _pip_steps(stages[0]), _pip_steps(stages[-1])
    built = [s for s in build_steps if s[0] == "wheel"]
    assert built, "the build stage builds wheels"
    full = os.environ.get("GATEWAY_DEPLOY_FULL_BUILD") == "1"

    def requirements(step: list[str]) -> list[str]:
        reqs, skip = [], False
        for word in step[1:]:
            if skip:
                skip = False
            elif word in ("--wheel-dir", "-w", "--find-links", "-f", "-d", "--dest"):
                skip = True
            elif not word.startswith("-"):
                reqs.append(word)
        return reqs

    context = tmp_path / "src"
    context.mkdir()
    _copy_build_context(context)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    env = {**_env_without_secrets(), "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON "
           "-DGGML_FMA=ON -DGGML_F16C=ON", "PIP_ROOT_USER_ACTION": "ignore"}

    def run(args: list[str], timeout: float) -> None:
        result = subprocess.run(args, cwd=context, env=env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    run(pip + ["install", "--upgrade", "pip", "wheel"], 300)
    installed_names = set()
    for step in built:
        for req in requirements(step):
            no_deps = "--no-deps" in step
            if req.startswith("."):
                target = req if full else re.sub(r"\[.*\]", "", req)
                run(pip + ["install", target], 1800 if full else 600)
                installed_names.add("edge-cloud-gateway")
            elif full:
                run(pip + ["install"] + (["--no-deps"] if no_deps else []) + [req], 1800)
                installed_names.add(re.split(r"[\[=<>]", req)[0])
            else:
                run(pip + ["download", "--no-deps", "-d", str(tmp_path / "dl"), req], 600)
                installed_names.add(re.split(r"[\[=<>]", req)[0])
    # The final stage installs exactly what the build stage built (by project name).
    pyproject_name = re.search(r'^name\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    final_names = {re.split(r"[\[=<>]", r)[0] for s in final_steps if s[0] == "install" for r in requirements(s)
                   if not r.startswith("--")}
    final_names.discard("")
    assert pyproject_name in final_names
    assert final_names - {pyproject_name} <= installed_names, (final_names, installed_names)

    # The installed gateway, run from outside the source tree.
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(one_model_policy(upstream.url)))
    port = free_port()
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([str(venv / "bin" / "gateway"), "serve", "--policy", str(policy), "--port", str(port)],
                            cwd=tmp_path, env={**env, "GATEWAY_ADMIN_KEY": "k"}, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
            time.sleep(0.2)
        r = httpx.post(base + "/v1/chat/completions", timeout=30,
                       json={"model": "auto", "messages": [{"role": "user", "content": "from the wheel"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "mock answer to: from the wheel"
        # Package data made it into the wheel: the dashboard page (the classifier loaded at start already).
        page = httpx.get(base + "/dashboard", timeout=5)
        assert page.status_code == 200 and "admin/status" in page.text
        healthcheck = subprocess.run([str(venv / "bin" / "python"), str(DEPLOY / "healthcheck.py")],
                                     env={**env, "GATEWAY_PORT": str(port)}, capture_output=True, timeout=30)
        assert healthcheck.returncode == 0
    finally:
        _stop(proc)
        log.close()


# ---------------------------------------------------------------------------------------------------------
# A fresh install: `pip install .` without the `edge` extra, then `gateway serve` on the default policy

_WITHOUT_LLAMA_CPP = """
import sys
from importlib.abc import MetaPathFinder

class Blocked(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocked())
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_serve_without_the_edge_extra_starts_with_one_line_and_answers(tmp_path):
    """llama_cpp cannot be imported (as after `pip install .`): the default policy still starts, says in one
    line what is missing and how to install it, and answers with its canned reply (no traceback)."""
    port = free_port()
    env = {**_env_without_secrets(), "GATEWAY_ADMIN_KEY": "k", "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", _WITHOUT_LLAMA_CPP, "serve", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert "local" in httpx.get(base + "/readyz", timeout=5).json()["unavailable_models"]
        r = httpx.post(base + "/v1/chat/completions", timeout=30,
                       json={"model": "auto", "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-degraded"] == "true"
        assert r.json()["choices"][0]["message"]["content"]
        assert "edge-cloud-gateway[edge]" in r.headers["x-gateway-skipped"]
    finally:
        _stop(proc)
    output = log_path.read_text()
    assert "Traceback" not in output, output[-3000:]
    warnings = [line for line in output.splitlines() if "llama-cpp-python is not installed" in line]
    assert len(warnings) == 1 and "pip install 'edge-cloud-gateway[edge]'" in warnings[0], output[-3000:]


# ---------------------------------------------------------------------------------------------------------
# scripts/serve.sh: installs only when what it installs changed

_FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$(dirname "$0")/../calls.log"
"""
_FAKE_GATEWAY = """#!/usr/bin/env bash
echo "gateway $*" >> "$(dirname "$0")/../calls.log"
"""


def test_serve_script_installs_only_when_the_package_changed(tmp_path):
    for name in ("serve.sh", "venv.sh"):
        (tmp_path / "scripts").mkdir(exist_ok=True)
        shutil.copy2(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("python", _FAKE_PYTHON), ("gateway", _FAKE_GATEWAY)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / ".venv" / "calls.log"

    def serve() -> list[str]:
        calls.unlink(missing_ok=True)
        run = subprocess.run(["bash", str(tmp_path / "scripts" / "serve.sh"), "--port", "1"], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return calls.read_text().splitlines()

    first = serve()
    assert any("pip install" in c and ".[edge]" in c for c in first), first
    assert first[-1] == "gateway serve --port 1"
    assert serve() == ["gateway serve --port 1"]                 # nothing changed: no pip at all
    (tmp_path / "gateway" / "settings.py").write_text((tmp_path / "gateway" / "settings.py").read_text() + "\n")
    assert any("pip install" in c for c in serve())              # the package changed: installed again
    assert serve() == ["gateway serve --port 1"]
    with open(tmp_path / "pyproject.toml", "a") as fh:
        fh.write("\n# changed\n")
    assert any("pip install" in c for c in serve())
