"""Export a graph to MLIR: one `func.func` in linalg on tensors, built with the real bindings.

Every graph input (runtime inputs, params, buffers, consts) becomes a function argument in
graph order, so one compiled module serves any weights; the graph outputs are the results.
Each node lowers through its op's template (`mlir_lowerings.TEMPLATES`), mostly as one
`linalg.generic` read straight off the node's `Structure` and scalar body. The module is
verified before it is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

from iree.compiler import ir
from iree.compiler.dialects import func

from codesign.export.mlir_builder import Builder, MlirExportError, tensor_type
from codesign.export.mlir_lowerings import NodeContext, lowering_for
from codesign.ir import get_op, structure_of, verify
from codesign.ir.graph import Graph, Input, Node


@dataclass(frozen=True)
class MlirModule:
    """A verified module, the context that owns it, and its function's signature.

    The `ir.Module` is only usable while `context` is alive, hence they travel together.
    """

    context: ir.Context
    module: ir.Module
    func_name: str
    arguments: tuple[Input, ...]

    @property
    def text(self) -> str:
        return str(self.module)

    def __str__(self) -> str:
        return self.text


def to_mlir(graph: Graph) -> MlirModule:
    """Lower `graph` to `func.func @<graph.name>`; raise `MlirExportError` on an unsupported op."""
    verify(graph)
    context = ir.Context()
    with context, ir.Location.unknown():
        module = ir.Module.create()
        arg_types = [tensor_type(i.type.shape, i.type.dtype) for i in graph.inputs]
        result_types = [tensor_type(t.shape, t.dtype) for t in graph.output_types()]
        with ir.InsertionPoint(module.body):
            fn = func.FuncOp(graph.name, (arg_types, result_types))
            entry = fn.add_entry_block()
            with ir.InsertionPoint(entry):
                values = {i.name: arg for i, arg in zip(graph.inputs, entry.arguments)}
                for node in graph.nodes:
                    values[node.name] = _lower_node(graph, node, values)
                func.ReturnOp([values[name] for name in graph.outputs])
        try:
            module.operation.verify()
        except ir.MLIRError as exc:
            raise MlirExportError(f"internal error: the module exported from @{graph.name} does "
                                  f"not verify; please report it with the graph text.\n{exc}") from exc
    return MlirModule(context, module, graph.name, graph.inputs)


def mlir_text(graph: Graph) -> str:
    """The exported module as MLIR assembly (deterministic: same graph, same text)."""
    return to_mlir(graph).text


def _lower_node(graph: Graph, node: Node, values: dict[str, ir.Value]) -> ir.Value:
    op = get_op(node.op)
    lowering = lowering_for(op)
    where = f"%{node.name} = {node.op}(...)"
    if lowering is None:
        template = op.template.value if op.template else "none"
        raise MlirExportError(f"{where}: op {node.op!r} (template {template}) has no MLIR lowering; "
                              f"add one to codesign/export/mlir_lowerings.py (TEMPLATES) or rewrite "
                              f"the node with supported ops")
    types = graph.types()
    context = NodeContext(
        builder=Builder(), node=node, operands=[values[o] for o in node.operands],
        operand_types=[types[o] for o in node.operands], structure=structure_of(graph, node),
        attrs=op.attr_values(node.attrs))
    try:
        with ir.Location.name(f"%{node.name}"):
            result = lowering(context)
    except MlirExportError as exc:
        if str(exc).startswith(where):
            raise
        raise MlirExportError(f"{where}: {exc}") from exc
    expected = tensor_type(node.type.shape, node.type.dtype)
    if result.type != expected:
        raise MlirExportError(f"internal error: {where} lowered to {result.type}, expected {expected}")
    return result
