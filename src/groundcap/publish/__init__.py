"""Publishing a built release: checked (``plan``), then sent to the Hub (``hub``) or a folder/URL (``folder``);
``groundcap publish`` (``cli.publish``) drives it. A published version is immutable."""
