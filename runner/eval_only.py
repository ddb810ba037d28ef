"""`--eval_only`: one sweep evaluation of a saved run's latest checkpoint, into `<run dir>/eval/<tag>/`."""

import os

from runner.config import RunPlan
from runner.session import open_session


def evaluate(plan: RunPlan) -> str:
    """Evaluates the checkpoint the plan restores (`plan.eval_only`); returns the path of the report."""
    session = open_session(plan)
    try:
        session.evaluate(session.step)
    finally:
        session.close()
    report = os.path.join(plan.out_dirs[0], "report.md")
    print(f"Report: {report}")
    return report
