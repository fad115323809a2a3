"""Tune job: ``python jobs/tune.py --help``; on a cluster: ``ray job submit --working-dir . -- python jobs/tune.py ...``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("tune")
