"""Index job: embed every graph with Ray Data actors and build or extend the FAISS index (incremental; an index of
another encoder needs ``--rebuild``): ``python jobs/index.py --graphs G --encoder E --out INDEX``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("index")
