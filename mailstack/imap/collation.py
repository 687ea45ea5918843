"""PURE i;unicode-casemap collation (RFC 5051), which SORT and THREAD must use
for strings (RFC 5256 and RFC 5255 I18NLEVEL=1).

A string's comparison key is the string with every character mapped to its
simple titlecase (RFC 5051 2, step 1) and then decomposed (step 2, NFKD);
keys compare octet by octet in UTF-8, which is code point order.
"""

from __future__ import annotations

import unicodedata


def _titlecase(char: str) -> str:
    """The simple (one character) titlecase mapping of UnicodeData.txt.

    Python offers only the full mappings; where they give one character it
    is the simple mapping, and a multi-character full mapping (as for "ß")
    means there is no simple mapping at all."""
    title = char.title()
    if len(title) == 1:
        return title
    upper = char.upper()
    return upper if len(upper) == 1 else char


def casemap(text: str) -> str:
    """The i;unicode-casemap comparison key of ``text``."""
    if text.isascii():
        # ASCII titlecase is upper case, and NFKD leaves ASCII alone.
        return text.upper()
    return unicodedata.normalize("NFKD", "".join(_titlecase(char) for char in text))
