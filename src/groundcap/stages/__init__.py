"""One module per pipeline stage, each declaring its ``Stage`` (``groundcap.pipeline.stage``) as ``STAGE``;
``groundcap.pipeline.order`` lists them in order."""
