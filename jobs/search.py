"""Search job: ``python jobs/search.py --help``; on a cluster: ``ray job submit --working-dir . -- python jobs/search.py ...``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("search")
