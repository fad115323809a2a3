"""Graphify job: ``python jobs/graphify.py --help``; on a cluster: ``ray job submit --working-dir . -- python jobs/graphify.py ...``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("graphify")
