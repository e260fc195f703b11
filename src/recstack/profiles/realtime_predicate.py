"""A segment's rule as one Python function ``(values, attributes) -> bool``, generated once per rule set: the
real-time follower evaluates about a dozen rules per event, and walking the rule tree (compile.evaluate) or memoising
its verdicts cost more than the follower's whole Redis traffic.

The generated code is the twin of compile.evaluate, node for node (tests/profiles/test_realtime_predicate.py checks
them against each other on random inputs); a node or operator it does not know falls back to compile.evaluate.
Constants (bounds, attribute values, feature ids) are passed in a tuple, never written into the source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from recstack.profiles.compile import evaluate
from recstack.profiles.rules import All, AnyOf, AttributeIs, Compare, Node, Not, Segment

Predicate = Callable[[Mapping[str, float], Mapping[str, str]], bool]

# compile._PY_OPS as Python operators
_OPS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<", "eq": "==", "ne": "!="}


class _Unsupported(Exception):
    """A node or operator this generator does not know: the caller uses compile.evaluate."""


class _Source:
    def __init__(self) -> None:
        self.constants: list[Any] = []
        self.temps = 0

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"k[{len(self.constants) - 1}]"

    def temp(self) -> str:
        self.temps += 1
        return f"t{self.temps}"

    def node(self, node: Node) -> str:
        if isinstance(node, All):
            return "(" + " and ".join(self.node(c) for c in node.children) + ")" if node.children else "True"
        if isinstance(node, AnyOf):
            return "(" + " or ".join(self.node(c) for c in node.children) + ")" if node.children else "False"
        if isinstance(node, Not):
            return f"(not {self.node(node.child)})"
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, AttributeIs):
            return self.attribute(node)
        raise _Unsupported(type(node).__name__)

    def compare(self, node: Compare) -> str:
        measure = node.measure
        value = f"v.get({self.constant(measure.feature.id)}, 0.0)"
        if measure.denominator is not None:
            total = self.temp()
            denominator = f"v.get({self.constant(measure.denominator.id)}, 0.0)"
            value = f"(({value} / {total}) if ({total} := {denominator}) > 0 else 0.0)"
        if not node.ops:
            return "True"
        if len(node.ops) > 1:  # the measure once, compared with every bound
            number = self.temp()
            first, value = f"({number} := {value})", number
        else:
            first = value
        parts = []
        for i, (op, bound) in enumerate(node.ops):
            if op not in _OPS:
                raise _Unsupported(op)
            parts.append(f"({first if i == 0 else value} {_OPS[op]} {self.constant(bound)})")
        return "(" + " and ".join(parts) + ")"

    def attribute(self, node: AttributeIs) -> str:
        actual = f"a.get({self.constant(node.name)})"
        parts = []
        for op, expected in node.ops:
            if op == "eq":
                parts.append(f"({actual} == {self.constant(expected)})")
            elif op == "ne":
                parts.append(f"({actual} != {self.constant(expected)})")
            elif op == "in":
                parts.append(f"({actual} in {self.constant(expected)})")
            else:
                raise _Unsupported(op)
        return "(" + " and ".join(parts) + ")" if parts else "True"


def compile_predicate(segment: Segment) -> Predicate:
    """``segment``'s rule as a function of feature values (by feature id, a missing one reads 0) and attributes."""
    source = _Source()
    try:
        body = source.node(segment.node)
    except _Unsupported:
        return lambda values, attributes: evaluate(segment, values, attributes)
    namespace: dict[str, Any] = {"k": tuple(source.constants)}
    # the source holds only operators and names: every constant is read from ``k``
    exec(f"def predicate(v, a):\n    return bool({body})\n", namespace)
    predicate = namespace["predicate"]
    predicate.__doc__ = f"segment {segment.name!r}: {body}"
    return predicate
