"""`vggspec run train|eval|features`: the runtime's jobs."""

from __future__ import annotations

from . import eval_command, features_command, train_command

JOBS = (train_command, eval_command, features_command)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a job: train, eval or features")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    for job in JOBS:
        job.add_parser(jobs)
