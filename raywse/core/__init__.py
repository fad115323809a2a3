"""raywse.core: what every stage shares — architecture specs and their reference forward (``spec``), crash-safe IO
(``io``), typed records (``records``), embedding tables (``embeddings``), every artifact file name
(``artifacts``), dataclass configs on the command line (``config``) and the Ray connection (``ray_session``)."""
