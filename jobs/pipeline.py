"""Main job (zoo -> graphs -> train -> index -> report): ``python jobs/pipeline.py``; on a cluster:
``ray job submit --working-dir . -- python jobs/pipeline.py``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("demo")
