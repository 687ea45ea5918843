"""PURE THREAD algorithms (RFC 5256 3): ORDEREDSUBJECT and REFERENCES, and
the THREAD response's nested lists (RFC 5256 4).

Every walk over a tree is iterative: a hostile mailbox can chain thousands
of messages through References, far deeper than Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mailstack.imap.sort import Sortable, sent_date

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


@dataclass(eq=False)
class Node:
    """A message (``item``) or a dummy standing in for a missing one (None)."""

    item: Sortable | None = None
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None

    def add(self, child: Node) -> None:
        child.parent = self
        self.children.append(child)


def _date_key(item: Sortable) -> tuple[float, int]:
    # RFC 5256 3: by sent date; the same date keeps mailbox order.
    return sent_date(item), item.position


def _node_key(node: Node) -> tuple[float, int]:
    # A dummy sorts by its first child (RFC 5256 3, REFERENCES steps 4 and 6).
    while node.item is None:
        node = node.children[0]
    return _date_key(node.item)


def _subject(item: Sortable) -> str:
    return str(item.keys.get("subject", ""))


def ordered_subject(items: Sequence[Sortable]) -> list[Node]:
    """ORDEREDSUBJECT: messages with one base subject form one thread, the
    earliest its root and the others its children; threads in order of
    their roots' sent dates."""
    threads: dict[str, Node] = {}
    for item in sorted(items, key=lambda i: (_subject(i), *_date_key(i))):
        root = threads.get(_subject(item))
        if root is None:
            threads[_subject(item)] = Node(item)
        else:
            root.add(Node(item))
    return sorted(threads.values(), key=_node_key)


def _post_order(roots: list[Node]) -> list[Node]:
    """Every node below ``roots``, each after all of its descendants (a
    reversed pre-order)."""
    order: list[Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()
    return order


def _is_ancestor(candidate: Node, node: Node) -> bool:
    """Whether ``candidate`` is ``node`` or above it."""
    current: Node | None = node
    while current is not None:
        if current is candidate:
            return True
        current = current.parent
    return False


def _build_links(items: Sequence[Sortable]) -> list[Node]:
    """Step 1 (link by Message-ID and References) and step 2 (the root set)."""
    by_id: dict[str, Node] = {}
    nodes: list[Node] = []
    for item in sorted(items, key=lambda i: i.position):
        message_id = item.keys.get("id")
        node: Node | None = None
        if isinstance(message_id, str):
            node = by_id.get(message_id)
            if node is not None and node.item is not None:
                node = None  # a duplicate Message-ID: this message gets a unique one
            elif node is None:
                node = by_id[message_id] = Node()
        if node is None:
            node = Node()
        node.item = item
        nodes.append(node)
        # (1A) Chain the References: each earlier id the parent of the next,
        # unless the later already has a parent or it would make a loop.
        previous: Node | None = None
        for reference in item.keys.get("refs") or ():
            current = by_id.get(reference)
            if current is None:
                current = by_id[reference] = Node()
            if (
                previous is not None
                and current.parent is None
                and not _is_ancestor(current, previous)
            ):
                previous.add(current)
            previous = current
        # (1B) The last reference is the message's parent: the message's own
        # header outranks a parent guessed from another message's References,
        # so that guess goes even when the message names no parent at all
        # (as Dovecot does; RFC 5256 explains the break as a truncated header).
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if previous is not None and not _is_ancestor(node, previous):
            previous.add(node)
    # (2) The roots: everything without a parent (dummies included).
    seen: set[int] = set()
    roots: list[Node] = []
    for node in [*nodes, *by_id.values()]:
        if node.parent is None and id(node) not in seen:
            seen.add(id(node))
            roots.append(node)
    return roots


def _prune(roots: list[Node]) -> list[Node]:
    """Step 3: dummies go; their children move up a level, except that at
    the top only a lone child moves up (several stay grouped by the dummy)."""
    for node in _post_order(roots):
        kept: list[Node] = []
        for child in node.children:
            if child.item is None:
                for grandchild in child.children:
                    grandchild.parent = node
                kept.extend(child.children)
            else:
                kept.append(child)
        node.children = kept
    result: list[Node] = []
    for root in roots:
        if root.item is None and len(root.children) <= 1:
            for child in root.children:
                child.parent = None
                result.append(child)
        else:
            result.append(root)
    return result


def _sort_siblings(roots: list[Node]) -> list[Node]:
    """Sort every set of siblings by sent date, deepest first (step 6)."""
    for node in _post_order(roots):
        node.children.sort(key=_node_key)
    return sorted(roots, key=_node_key)


def _thread_subject(node: Node) -> str:
    item = node.item if node.item is not None else node.children[0].item
    return "" if item is None else _subject(item)


def _is_reply(node: Node) -> bool:
    return node.item is not None and bool(node.item.keys.get("reply"))


def _merge_subjects(roots: list[Node]) -> list[Node]:
    """Step 5: threads whose roots share a base subject are gathered."""
    table: dict[str, Node] = {}
    for root in roots:  # (5B) one thread per subject, preferring dummies and non-replies
        subject = _thread_subject(root)
        if not subject:
            continue
        held = table.get(subject)
        if held is None or (
            held.item is not None
            and (root.item is None or (_is_reply(held) and not _is_reply(root)))
        ):
            table[subject] = root
    result: list[Node] = []
    for root in roots:  # (5C) merge each other thread into the table's
        subject = _thread_subject(root)
        held = table.get(subject) if subject else None
        if held is None or held is root:
            result.append(root)
            continue
        if held.item is None and root.item is None:
            for child in root.children:
                held.add(child)
        elif held.item is None or (_is_reply(root) and not _is_reply(held)):
            held.add(root)
        else:
            # A new dummy above both: the held node itself becomes the dummy
            # (it keeps its place among the roots and in the table).
            moved = Node(held.item)
            for child in held.children:
                moved.add(child)
            held.item = None
            held.children = []
            held.add(moved)
            held.add(root)
    return result


def references(items: Sequence[Sortable]) -> list[Node]:
    """REFERENCES (RFC 5256 3): threads from Message-ID/References/In-Reply-To,
    then threads with the same base subject gathered."""
    roots = _prune(_build_links(items))
    # (4) Roots by sent date (a dummy by its earliest child) before step 5.
    roots = _sort_siblings(roots)
    return _sort_siblings(_merge_subjects(roots))


def serialize(roots: list[Node]) -> str:
    """The THREAD response's thread lists (RFC 5256 4): ``thread-members`` run
    on while a message has one child; two or more children nest."""
    out: list[str] = []
    # A stack of text pieces and nodes still to write, in reverse order.
    pending: list[str | Node] = []
    for root in reversed(roots):
        pending += [")", root, "("]
    while pending:
        piece = pending.pop()
        if isinstance(piece, str):
            out.append(piece)
            continue
        node = piece
        tail: list[str | Node] = []
        if node.item is not None:
            out.append(str(node.item.number))
            if len(node.children) == 1:
                tail = [" ", node.children[0]]
            elif node.children:
                tail = [" "]
        if node.item is None or len(node.children) > 1:
            for child in node.children:
                tail += ["(", child, ")"]
        pending.extend(reversed(tail))
    return "".join(out)
