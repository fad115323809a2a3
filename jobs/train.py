"""Train job: ``python jobs/train.py --help``; on a cluster: ``ray job submit --working-dir . -- python jobs/train.py ...``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("train")
