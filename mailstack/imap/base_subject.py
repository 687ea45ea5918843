"""PURE base-subject extraction (RFC 5256 2.1), shared by SORT SUBJECT and
both THREAD algorithms.

The input is the Subject with its RFC 2047 encoded-words already decoded
(``mime.analyze`` stores it that way at delivery).  Besides the base subject
the extraction tells whether the subject marks a reply or forward: it
removed a subj-refwd ("Re:", "Fwd:", "Fw[blob]:"), a "(fwd)" trailer or a
"[fwd: ...]" wrapper (RFC 5256 3, REFERENCES step 5).
"""

from __future__ import annotations

import re

# After step (1) the only WSP left is the space.
_BLOB = r"\[[^\[\]]*\] *"  # subj-blob = "[" *BLOBCHAR "]" *WSP
# subj-leader = (*subj-blob subj-refwd) / WSP;
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_REFWD_LEADER = re.compile(rf"(?:{_BLOB})*(?:re|fwd?) *(?:{_BLOB})?:", re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)
_SPACES = re.compile(r"[ \t\r\n]+")
_FWD_HDR = "[fwd:"  # subj-fwd-hdr (case-insensitive); subj-fwd-trl is "]"
_FWD_TRAILER = "(fwd)"  # subj-trailer = "(fwd)" / WSP


def extract(subject: str) -> tuple[str, bool]:
    """(base subject, is a reply or forward) of a decoded Subject."""
    # (1) Tabs and continuations become a space, runs of spaces one space.
    text = _SPACES.sub(" ", subject)
    reply = False
    while True:
        # (2) Remove subj-trailer text ("(fwd)" or WSP) at the end, repeatedly.
        while True:
            if text.endswith(" "):
                text = text[:-1]
            elif text[-len(_FWD_TRAILER) :].lower() == _FWD_TRAILER:
                text = text[: -len(_FWD_TRAILER)]
                reply = True
            else:
                break
        while True:
            changed = False
            # (3) Remove subj-leader text at the start.
            while True:
                if text.startswith(" "):
                    text = text[1:]
                    changed = True
                    continue
                match = _REFWD_LEADER.match(text)
                if match is None:
                    break
                text = text[match.end() :]
                reply = changed = True
            # (4) Remove a leading subj-blob if a non-empty subj-base remains.
            match = _BLOB_PREFIX.match(text)
            if match is not None and match.end() < len(text):
                text = text[match.end() :]
                changed = True
            # (5) Repeat (3) and (4) until neither matches.
            if not changed:
                break
        # (6) Unwrap "[fwd: ... ]" and start again from (2).
        if text[: len(_FWD_HDR)].lower() == _FWD_HDR and text.endswith("]"):
            text = text[len(_FWD_HDR) : -1]
            reply = True
            continue
        # (7) What is left is the base subject.
        return text, reply
