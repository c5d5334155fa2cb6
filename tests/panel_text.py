"""Reading what the Lip Sync panel drew, from a record of its layout calls (("label", text, icon),
...): the bpy-module tests and the real-window test record the same way."""

from __future__ import annotations


def labels(drawn) -> list:
    """The panel's texts, a label wrapped over several lines (the later ones indented with a
    blank icon) as one."""
    out: list = []
    for e in drawn:
        if e[0] != "label":
            continue
        if e[2] == "BLANK1" and out:
            out[-1] += " " + e[1]
        else:
            out.append(e[1])
    return out
