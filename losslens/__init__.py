"""losslens: pretraining-loss threshold studies.

Three stages, joined by two on-disk contracts (see ``losslens.contracts``):

    losslens.train     study.yaml  -> RUN_DIR/<run>/ckpt-<tokens>/   (HF checkpoints + meta.json)
    losslens.evaluate  checkpoints -> RUN_DIR/results.csv            (one tidy table)
    losslens.analyze   results.csv -> RUN_DIR/report.{json,md}, plots/
"""

__version__ = "0.1.0"
