"""The scale-out configuration that is not run here (deploy/k8s), checked for shape: the files
parse and name what the code expects, the training job's tag becomes a GPU pod spec through
dagster-k8s's own job builder, and RAG_SFT_EXECUTOR picks the daily job's executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from rag_sft.sensors.training import GPU_POD_TAG, training_tags
from rag_sft_tests.deploy.test_production_setup import REPO

K8S = REPO / "deploy" / "k8s"


def test_the_helm_values_run_each_run_as_a_k8s_job_on_the_postgres_instance_with_the_projects_code():
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    postgres = values["postgresql"]
    assert (postgres["enabled"], postgres["postgresqlScheme"]) == (False, "postgresql+psycopg2")
    assert values["generatePostgresqlPasswordSecret"] is False
    [code] = values["dagster-user-deployments"]["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["--module-name", "rag_sft.definitions"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for pods in (code, launcher, values["dagsterDaemon"]):
        assert {"name": "rag-sft-config"} in pods["envConfigMaps"] and {"name": "rag-sft-secrets"} in pods["envSecrets"]
    assert launcher["volumes"] == code["volumes"] and launcher["volumeMounts"] == code["volumeMounts"]


def test_the_secrets_file_holds_placeholders_and_every_secret_the_values_name():
    documents = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((K8S / "configmap-and-secrets.yaml").read_text())}
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    assert values["global"]["postgresqlSecretName"] in documents
    assert set(documents["rag-sft-postgresql"]["stringData"]) == {"postgresql-password"}
    secrets = documents["rag-sft-secrets"]["stringData"]
    assert {"RAG_SFT_STATE_URL", "OPENAI_API_KEY"} <= set(secrets)
    assert all("<" in value for doc in documents.values() if doc["kind"] == "Secret" for value in doc["stringData"].values())
    assert documents["rag-sft-config"]["data"]["RAG_SFT_EXECUTOR"] in ("k8s", "in_process")


def test_the_training_run_pod_gets_a_gpu_on_the_gpu_pool():
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    from rag_sft.definitions import defs

    assert GPU_POD_TAG not in defs.resolve_job_def("lora_training_job").tags  # a local set-up: no k8s tag
    assert GPU_POD_TAG not in training_tags("celery", environ={})
    assert training_tags("in_process", environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == training_tags("k8s", environ={})
    tags = training_tags("k8s", environ={})
    user_config = UserDefinedDagsterK8sConfig.from_dict(json.loads(tags[GPU_POD_TAG]))
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="registry.example.com/rag-sft:0.1.0", dagster_home="/opt/dagster/dagster_home"),
        args=["dagster", "api", "execute_run"],
        job_name="dagster-run-probe",
        user_defined_k8s_config=user_config,
    )
    pod = job.spec.template.spec
    assert pod.node_selector == {"rag-sft/pool": "gpu"}
    assert [(t.key, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "NoSchedule")]
    assert pod.containers[0].resources.limits == {"nvidia.com/gpu": "1"}


def _daily_executor_named_by(variables: dict) -> subprocess.CompletedProcess:
    code = "from rag_sft.definitions import defs; print(defs.resolve_job_def('daily_sft_job').executor_def.name)"
    return subprocess.run([sys.executable, "-c", code], env=variables, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("choice", "executor"), [("", "in_process"), ("celery", "celery_executor"), ("k8s", "k8s")]
)
def test_the_environment_picks_the_daily_jobs_executor(choice, executor):
    done = _daily_executor_named_by({**os.environ, "RAG_SFT_EXECUTOR": choice})
    assert (done.returncode, done.stdout.strip()) == (0, executor), done.stderr[-2000:]


def test_an_unknown_executor_is_refused_by_name():
    done = _daily_executor_named_by({**os.environ, "RAG_SFT_EXECUTOR": "spark"})
    assert done.returncode != 0 and "RAG_SFT_EXECUTOR must be in_process, celery or k8s, got 'spark'" in done.stderr
