"""Run jobs as KubeRay ``RayJob`` resources: :class:`KubeRayRunner`, the second implementation of
:class:`app.orchestration.runner.JobRunner` (the first: the Ray Jobs API).

Each run is a copy of the job's RayJob template (label ``greenhouse.io/job``, from a rendered
``kuberay/`` overlay) named by the submission id; it brings up its own Ray cluster and deletes it
after the job. Creating a name that exists attaches to that RayJob (the same id never runs twice).
``kubernetes`` and ``ray`` are imported lazily (by :mod:`app.kuberay.client` and for logs).
This package depends on :mod:`app.orchestration`, never the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.orchestration.registry import job_spec
from app.orchestration.runner import TERMINAL, JobRequest, JobResult, JobRunner, LogsCallback, StatusCallback, Submission, last_json_line

if TYPE_CHECKING:  # pragma: no cover - types only
    from app.kuberay.client import KubeRayClient, KubeTarget, RayJobStatus

log = logging.getLogger(__name__)


class KubeRayRunner(JobRunner):
    """:class:`JobRunner` that creates RayJobs from the templates among ``objects`` in the
    namespace of ``client``.

    - ``fetch_logs``: after a job ends, read its log from its cluster's dashboard when this
      process can reach it (best effort: the cluster may already be gone; ``kubectl logs
      job/<name>`` has the submitter's copy). The log gives :attr:`JobResult.summary`.
    - ``stop_on_interrupt``: delete the RayJob when the wait times out or is interrupted;
      otherwise it runs on (its ``activeDeadlineSeconds`` still bounds it).
    """

    def __init__(self, client: KubeRayClient, objects: Iterable[dict[str, Any]] = (), *, fetch_logs: bool = True, stop_on_interrupt: bool = False, poll_s: float = 2.0) -> None:
        self.client = client
        self.objects = list(objects)
        self.fetch_logs = fetch_logs
        self.stop_on_interrupt = stop_on_interrupt
        self.poll_s = poll_s

    @classmethod
    def from_manifests(cls, manifests_file: str | Path, target: KubeTarget, **options: Any) -> KubeRayRunner:
        """A runner on ``target`` with the templates of a rendered overlay file
        (``kubectl kustomize kuberay/overlays/<env>`` output)."""
        from app.kuberay.client import KubeRayClient
        from app.kuberay.manifests import load_documents

        return cls(KubeRayClient.connect(target), load_documents(Path(manifests_file).read_text()), **options)

    def submit(self, request: JobRequest) -> Submission:
        """Create the RayJob ``submission_id`` from the job's template with ``args`` appended to its
        entrypoint and ``env_vars`` in its runtime environment (or find the existing one)."""
        from app.kuberay.manifests import rayjob_run, rayjob_template

        spec = job_spec(request.job)
        run = rayjob_run(rayjob_template(self.objects, spec.name), request.submission_id, extra_args=request.args, env_vars=dict(request.env_vars), namespace=self.client.namespace)
        created = self.client.create(run)
        return Submission(request.submission_id, created.created, run["spec"]["entrypoint"])

    def status(self, submission_id: str) -> str:
        """The RayJob's job status in the Jobs API's words (see :func:`job_state`)."""
        return job_state(self.client.rayjob_status(submission_id))

    def wait(self, submission: Submission, *, timeout_s: float, on_status: StatusCallback | None = None, on_logs: LogsCallback | None = None) -> JobResult:
        """Watch the RayJob until its deployment is terminal; ``on_status`` gets each change
        (``Running RUNNING``, ...), ``on_logs`` the whole log once at the end (with ``fetch_logs``)."""
        name = submission.submission_id
        try:
            status = self.client.wait_rayjob(name, timeout_s=timeout_s, poll_s=self.poll_s, on_status=(lambda s: on_status(s.describe())) if on_status else None)
        except BaseException:
            if self.stop_on_interrupt:
                self.stop(name)
            raise
        logs = self._logs_of(status) if self.fetch_logs else ""
        if logs and on_logs:
            on_logs(logs)
        detail = {
            "deployment_status": status.deployment_status,
            "job_status": status.job_status,
            "job_id": status.job_id,
            "reason": status.reason,
            "message": status.message,
            "description": status.describe(),
        }
        return JobResult(name, job_state(status), logs, last_json_line(logs), submission.submitted, detail)

    def logs(self, submission_id: str) -> str:
        """The job's log from its cluster's dashboard, or empty when it cannot be reached."""
        return self._logs_of(self.client.rayjob_status(submission_id))

    def stop(self, submission_id: str) -> bool:
        """Delete the RayJob (its cluster and pods go with it); never raises."""
        try:
            return self.client.delete("RayJob", submission_id)
        except Exception as exc:  # noqa: BLE001 - a stop is best effort (gone, unreachable)
            log.warning("could not delete RayJob %s: %s", submission_id, exc)
            return False

    def _logs_of(self, status: RayJobStatus) -> str:
        if not (status.dashboard_url and status.job_id):
            return ""
        from app.orchestration.ray_jobs import make_client, ray_auth_headers

        url = status.dashboard_url if "://" in status.dashboard_url else f"http://{status.dashboard_url}"
        try:
            return str(make_client(url, ray_auth_headers()).get_job_logs(status.job_id))
        except Exception as exc:  # noqa: BLE001 - logs are a convenience, the status is what counts
            log.info("job logs not available from %s (%s)", status.dashboard_url, exc)
            return ""


def job_state(status: RayJobStatus) -> str:
    """A RayJob's state as a Jobs API status: ``SUCCEEDED`` only when the deployment is Complete
    and the job succeeded; a terminal deployment otherwise is ``FAILED`` (or ``STOPPED``)."""
    if status.succeeded:
        return "SUCCEEDED"
    if status.terminal:
        return status.job_status if status.job_status in ("FAILED", "STOPPED") else "FAILED"
    return "RUNNING" if status.job_status in TERMINAL else status.job_status or "PENDING"
