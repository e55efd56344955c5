"""`gemlab jobs` and `gemlab submit` given bad input, with no cluster: one line on stderr, exit 2, no traceback.

Then the pieces that a real head cannot show cheaply: the retry while a new head has no job agent yet
(a fake of the SDK's answers), and the wording of the job server's refusals and of a missing module.
"""

from __future__ import annotations

import pytest

from gemlab.cli import main
from gemlab.jobs.client import JobsError, failure_hint, sdk_message, submit

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers there
SECRET = "wJalrXUtnFEMIK7MDENG"


@pytest.fixture(autouse=True)
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _one_error_line(capsys, command: str) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and SECRET not in out + err
    (line,) = err.splitlines()
    assert line.startswith(f"gemlab {command}: error: ")
    return line


JOBS_CASES = [
    (["list"], "no cluster address"),
    (["status"], "status needs a job id"),
    (["logs", "--follow"], "logs needs a job id"),
    (["stop", "--address", NOWHERE], "stop needs a job id"),
    (["list", "raysubmit_x", "--address", NOWHERE], "list takes no job id"),
    (["list", "--address", NOWHERE], f"cannot reach the Ray job server at {NOWHERE}"),
    (["status", "raysubmit_x", "--address", NOWHERE], "cannot reach"),
    (["logs", "raysubmit_x", "--follow", "--address", NOWHERE], "cannot reach"),
    (["stop", "raysubmit_x", "--address", NOWHERE], "cannot reach"),
    (["list", "--address", f"http://KEY:{SECRET}@127.0.0.1:9"], "http://***@127.0.0.1:9"),
    (["list", "--address", "127.0.0.1:8265"], "'127.0.0.1:8265' is not the job server's http address"),
    (["list", "--address", "ray://127.0.0.1:10001"], "is not the job server's http address"),
    (["list", "--address", "http://"], "is not the job server's http address"),
    (["list", "--address", "http://[::1"], "http://[::1: "),
    (["list", "--address", "http://127.0.0.1:99999"], "http://127.0.0.1:99999: "),
]


@pytest.mark.parametrize(("argv", "says"), JOBS_CASES)
def test_jobs_refuses_bad_input_in_one_line(argv, says, capsys):
    assert main(["jobs", *argv]) == 2
    assert says in _one_error_line(capsys, "jobs")


def test_a_ray_address_that_is_not_http_is_named_as_coming_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert main(["jobs", "list"]) == 2
    assert "RAY_ADDRESS 'auto' is not the job server's http address" in _one_error_line(capsys, "jobs")


RUNTIME_ENVS = [
    (None, "No such file or directory"),
    (b"working_dir: .\nexcludes: [\n", "not valid YAML: "),
    (b"- working_dir\n", "expected a mapping at the top level, got list"),
    (b"", "expected a mapping at the top level, got an empty file"),
    (b"\xff\xfeworking_dir: .\n", "not UTF-8 text"),
    (b"when: 2024-13-01\n", "not valid YAML: month must be in 1..12"),
    (b"working_dirr: .\n", "working_dirr: not a runtime env key Ray knows"),
    (b"env_vars: [PYTHONPATH]\n", "env_vars"),
    (b"env_vars: {RAY_JOB_STOP_WAIT_TIME_S: 30}\n", "env_vars"),
    (b"working_dir: no/such/folder\n", "is not a valid path"),
]


@pytest.mark.parametrize(("content", "says"), RUNTIME_ENVS)
def test_submit_names_a_bad_runtime_env_before_contacting_any_cluster(content, says, tmp_path, capsys):
    path = tmp_path / "runtime_env.yaml"
    if content is not None:
        path.write_bytes(content)
    assert main(["submit", "--runtime-env", str(path), "--address", NOWHERE, "train", "experiment=tiny"]) == 2
    line = _one_error_line(capsys, "submit")
    assert f"runtime env {path}: " in line and says in line


def test_a_runtime_env_that_is_a_folder_is_named(tmp_path, capsys):
    assert main(["submit", "--runtime-env", str(tmp_path), "--address", NOWHERE, "train"]) == 2
    assert f"runtime env {tmp_path}: Is a directory" in _one_error_line(capsys, "submit")


SUBMIT_CASES = [
    ([], "no cluster address"),
    (["--address", NOWHERE], f"cannot reach the Ray job server at {NOWHERE}"),
    (["--address", "localhost:8265"], "is not the job server's http address"),
    (["--address", f"https://ci:{SECRET}@127.0.0.1:9", "--no-wait"], "https://***@127.0.0.1:9"),
]


@pytest.mark.parametrize(("argv", "says"), SUBMIT_CASES)
def test_submit_refuses_bad_input_in_one_line(argv, says, capsys):
    assert main(["submit", *argv, "train", "experiment=tiny", f"storage_path='s3://KEY:{SECRET}@b/runs'"]) == 2
    assert says in _one_error_line(capsys, "submit")


NO_AGENT = "Request failed with status code 500: No available agent to submit job, please try again later.."


class _HeadStarting:
    """The answers of a job server whose head's agent registers after ``refusals`` submissions."""

    def __init__(self, refusals: int):
        self.refusals, self.calls = refusals, 0

    def submit_job(self, **request):
        self.calls += 1
        if self.calls <= self.refusals:
            raise RuntimeError(NO_AGENT)
        return "raysubmit_ok"


def test_submit_waits_for_the_job_agent_of_a_head_just_started_saying_so_once(capsys):
    head = _HeadStarting(refusals=3)
    assert submit(head, "python -m gemlab.cli train", {}, agent_wait_seconds=5, poll_seconds=0.01) == "raysubmit_ok"
    assert head.calls == 4
    assert capsys.readouterr().err == "waiting up to 5 s for the head's job agent\n"


def test_submit_gives_up_on_the_job_agent_after_the_bound_in_one_line(capsys):
    head = _HeadStarting(refusals=10**9)
    with pytest.raises(JobsError, match=r"job agent did not answer within 0\.05 s .*--agent-wait"):
        submit(head, "python -m gemlab.cli train", {}, agent_wait_seconds=0.05, poll_seconds=0.01)
    assert capsys.readouterr().err.count("waiting") == 1


def test_submit_does_not_retry_other_refusals():
    class Refusing:
        calls = 0

        def submit_job(self, **request):
            self.calls += 1
            raise RuntimeError("Request failed with status code 400: Bad runtime env.")

    head = Refusing()
    with pytest.raises(JobsError, match=r"^the job server answered 400: Bad runtime env$"):
        submit(head, "python -m gemlab.cli train", {}, agent_wait_seconds=5, poll_seconds=0.01)
    assert head.calls == 1


@pytest.mark.parametrize(
    ("raised", "says"),
    [
        (RuntimeError("Request failed with status code 404: Job raysubmit_x does not exist."),
         "the job server answered 404: Job raysubmit_x does not exist"),
        (RuntimeError("Request failed with status code 500: Traceback (most recent call last):\n  File \"x.py\"\n"
                      "ValueError: Job with submission_id a already exists. "
                      "Please use a different submission_id.\n.\n."),
         "the job server answered 500: ValueError: Job with submission_id a already exists. "
         "Please use a different submission_id"),
        (ConnectionError(f"Failed to connect to Ray at address: http://k:{SECRET}@h:1.\nmore"),
         "Failed to connect to Ray at address: http://***@h:1."),
        (RuntimeError(""), "RuntimeError"),
    ],
)  # fmt: skip
def test_sdk_failures_become_one_masked_line(raised, says):
    assert sdk_message(raised) == says


FAILED_TAIL = "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (FAILED_TAIL + "ModuleNotFoundError: No module named 'gemlab'\n", "cannot import gemlab: ship the repository"),
        (FAILED_TAIL + "  import hydra\nModuleNotFoundError: No module named 'hydra'\n", "has no module 'hydra'"),
        (FAILED_TAIL + "warning: No module named 'tqdm'\nModuleNotFoundError: No module named 'yaml'", "'yaml'"),
    ],
)
def test_a_job_that_failed_on_a_missing_module_names_it_and_points_at_the_cluster_readme(message, says):
    hint = failure_hint("raysubmit_x", message)
    assert hint.startswith("job raysubmit_x: the cluster's python ") and says in hint
    assert hint.endswith("(cluster/README.md)") and "\n" not in hint


def test_a_job_that_failed_otherwise_gets_no_hint():
    assert (
        failure_hint("raysubmit_x", FAILED_TAIL + "omegaconf.errors.ConfigKeyError: Key 'bogus' is not in struct")
        is None
    )
