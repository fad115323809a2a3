"""Train job: ``python jobs/train.py --help``; on a cluster via ``ray job submit --working-dir . -- python ...``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("train")
