"""Zoo job: ``python jobs/zoo.py --help``; on a cluster: ``ray job submit --working-dir . -- python jobs/zoo.py ...``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("zoo")
