"""cluster/: launcher YAMLs validate against Ray's schema; KubeRay manifests carry what they must; the runtime env."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray._private.thirdparty.pathspec import PathSpec
from ray.autoscaler._private.util import prepare_config, validate_config

from gemlab.jobs.client import REPO_ROOT, entrypoint, load_runtime_env

CLUSTER = REPO_ROOT / "cluster"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_validate_against_rays_schema(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] == 0 < workers["max_workers"] <= config["max_workers"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert all("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"] if "--head" in c)
    broken = copy.deepcopy(config)
    broken["max_worker"] = 3  # a typo: the schema admits no unknown top-level key
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(broken))


def _gpu_group(group: dict) -> dict:
    (container,) = group["template"]["spec"]["containers"]
    return container["resources"]


def test_kuberay_manifests_carry_the_required_fields():
    cluster = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"], job["apiVersion"], job["kind"]) == (
        "ray.io/v1", "RayCluster", "ray.io/v1", "RayJob",
    )  # fmt: skip
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        assert spec["enableInTreeAutoscaling"] is True and spec["rayVersion"].startswith("2.60")
        (group,) = spec["workerGroupSpecs"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        resources = _gpu_group(group)
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):  # every pod mounts the shared storage
        for pod in [spec["headGroupSpec"]["template"]["spec"], spec["workerGroupSpecs"][0]["template"]["spec"]]:
            (container,) = pod["containers"]
            assert {"name": "runs", "mountPath": "/mnt/shared"} in container["volumeMounts"]
            assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "gemlab-runs"
    assert job["spec"]["entrypoint"].startswith("python -m gemlab.cli train ")
    assert "storage_path=/mnt/shared/" in job["spec"]["entrypoint"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_only_the_rayjob_dashboard_listens_beyond_loopback_and_neither_leaves_the_kubernetes_cluster():
    """A RayCluster's dashboard is reached by kubectl port-forward, which dials the head pod's own localhost.

    A RayJob's is reached by the operator and its submitter Job, another pod, through the head Service: bound to
    127.0.0.1, the job would never be submitted. Either way the Service stays a ClusterIP without an ingress.
    """
    cluster = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    heads = {"RayCluster": cluster["spec"]["headGroupSpec"], "RayJob": job["spec"]["rayClusterSpec"]["headGroupSpec"]}
    hosts = {kind: head["rayStartParams"]["dashboard-host"] for kind, head in heads.items()}
    assert hosts == {"RayCluster": "127.0.0.1", "RayJob": "0.0.0.0"}
    assert job["spec"].get("submissionMode", "K8sJobMode") == "K8sJobMode"  # the submitter is a pod of its own
    for head in heads.values():
        assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress", False)


def test_runtime_env_ships_the_code_but_not_the_venv_data_or_runs():
    env = load_runtime_env()
    assert Path(env["working_dir"]) == REPO_ROOT and env["env_vars"]["PYTHONPATH"] == "platform"
    assert env["env_vars"]["RAY_JOB_STOP_SIGNAL"] == "SIGINT"  # a stop aborts the run gracefully
    excluded = PathSpec.from_lines("gitwildmatch", env["excludes"])
    for path in (".venv/bin/python", "data/digits/rot0/a.png", "runs/x/results.parquet", ".git/HEAD"):
        assert excluded.match_file(path), path
    for path in ("platform/gemlab/data/mixture.py", "experiments/config.yaml", "cluster/runtime_env.yaml"):
        assert not excluded.match_file(path), path


def test_the_entrypoint_quotes_overrides():
    assert entrypoint("train", ["experiment=quickstart", "name=a b"]) == (
        "python -m gemlab.cli train experiment=quickstart 'name=a b'"
    )
