"""The codesign graph IR: types, affine maps, ops, graphs, group plans, text form, verifier, interpreter."""

from codesign.ir.affine import AffineMap, Const, Dim
from codesign.ir.graph import Graph, Group, Input, InputKind, Node
from codesign.ir.interpreter import InterpreterError, run_graph
from codesign.ir.ops import OPS, OpDef, OpKind, Structure, get_op, node_structure
from codesign.ir.parser import ParseError, decode_ir, load_graph, parse_graph
from codesign.ir.plan import GroupPlan, PlanError, chip_rereads
from codesign.ir.printer import print_graph
from codesign.ir.types import MAX_TENSOR_BYTES, DType, TensorType
from codesign.ir.verifier import VerifyError, diagnose, verify


def structure_of(graph: Graph, node: Node) -> Structure:
    """The `linalg.generic` view (domain, maps, body) of one node of `graph`."""
    return node_structure(node, graph.types())


__all__ = ["MAX_TENSOR_BYTES", "AffineMap", "Const", "Dim", "DType", "Graph", "Group", "GroupPlan", "Input", "InputKind",
           "InterpreterError", "Node", "OPS", "OpDef", "OpKind", "ParseError", "PlanError", "Structure",
           "TensorType", "VerifyError", "chip_rereads", "decode_ir", "diagnose", "get_op", "load_graph", "parse_graph",
           "print_graph", "run_graph", "structure_of", "verify"]
