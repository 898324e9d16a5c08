"""One module per pipeline stage, each declaring its ``Stage`` (``groundcap.stage``) as ``STAGE``;
``groundcap.pipeline`` puts them in order."""
