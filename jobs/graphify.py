"""Graphify job: ``python jobs/graphify.py --help``; cluster: ``ray job submit --working-dir . -- python ...``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("graphify")
