"""Exports of a built release into other tools' own formats (``groundcap export ...``)."""
