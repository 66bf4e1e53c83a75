"""`vggspec run train|eval|features`: the runtime's jobs."""

from __future__ import annotations

from vggspec.commands import eval as eval_command
from vggspec.commands import features as features_command
from vggspec.commands import train as train_command

JOBS = (train_command, eval_command, features_command)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a job: train, eval or features")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    for job in JOBS:
        job.add_parser(jobs)
